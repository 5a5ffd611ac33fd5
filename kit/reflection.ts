// Server reflection (grpc.reflection.v1 and v1alpha) over the descriptor set from `npm run
// generate`: every FileDescriptorProto is served byte for byte as buf built it, so options such as
// field_behavior and google.api.http, and the source comments, reach grpcurl and buf curl intact.
//
// Why not @grpc/reflection: it decodes each file with protobufjs and serves its re-encoding, which
// drops every option protobufjs does not know (field_behavior, google.api.http), and it has no way
// to serve the original bytes or to answer callers differently. The protocol itself is small: a
// stream of requests, each answered by name, symbol or extension with files, or by a list.
import {
  create,
  type DescFile,
  type DescMessage,
  fromBinary,
  type Message,
  toBinary,
} from "@bufbuild/protobuf";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import type * as grpc from "@grpc/grpc-js";
import { contractRegistry } from "./contract.js";
import { descriptorSet } from "./descriptor.js";
import { clipText } from "./errors.js";
import { MAX_STATUS_TEXT } from "./transport/guard.js";

/** What every shopmesh server serves beside its own proto services. */
export const INFRA_SERVICES = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
] as const;

/**
 * The request header Envoy sets on the reflection calls it forwards: such a call is answered with
 * the public API of the whole mesh, which the edge routes, rather than with what this port serves.
 */
export const EDGE_REFLECTION_HEADER = "x-shopmesh-edge";

/** Who asks, which decides what reflection shows. */
export type ReflectionView =
  /** A mesh identity other than the edge: this port's services, internal ones included. */
  | "mesh"
  /** A caller outside the mesh on this port: its public services. */
  | "direct"
  /** A call through the edge: the mesh's public API. */
  | "edge";

export interface ReflectionOptions {
  /** The proto services this server serves. */
  served: readonly string[];
  /** The mesh's internal proto services: their files are shown to mesh identities only. */
  internal: readonly string[];
  /** The mesh's public proto services, listed through the edge; `served` less `internal` if absent. */
  publicApi?: readonly string[];
}

const CODE = { NOT_FOUND: 5, INVALID_ARGUMENT: 3 } as const;

/** The FileDescriptorProtos of a FileDescriptorSet, byte for byte, by file name. */
export function descriptorFiles(set: Uint8Array = descriptorSet()): Map<string, Uint8Array> {
  const files = new Map<string, Uint8Array>();
  const reader = new BinaryReader(set);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field !== 1) {
      reader.skip(wireType);
      continue;
    }
    const bytes = reader.bytes();
    // FileDescriptorProto.name is field 1; buf writes it first.
    const name = new BinaryReader(bytes);
    const [first] = name.tag();
    if (first !== 1) throw new Error("a FileDescriptorProto without its name first");
    files.set(name.string(), bytes);
  }
  return files;
}

const fileName = (file: DescFile) => file.proto.name;

/** A file and every file it imports, transitively; the file first. */
function withImports(file: DescFile): DescFile[] {
  const seen = new Map<string, DescFile>([[fileName(file), file]]);
  const visit = (next: DescFile) => {
    for (const dependency of next.dependencies) {
      if (seen.has(fileName(dependency))) continue;
      seen.set(fileName(dependency), dependency);
      visit(dependency);
    }
  };
  visit(file);
  return [...seen.values()];
}

/** The file that declares a symbol: a type, a service, an extension, or a member of one. */
function fileOfSymbol(symbol: string): DescFile | undefined {
  const registry = contractRegistry();
  const type = registry.get(symbol);
  if (type) return type.file;
  const dot = symbol.lastIndexOf(".");
  const parent = dot > 0 ? registry.get(symbol.slice(0, dot)) : undefined;
  const member = symbol.slice(dot + 1);
  switch (parent?.kind) {
    case "service":
      return parent.methods.some((method) => method.name === member) ? parent.file : undefined;
    case "message":
      return [...parent.fields, ...parent.oneofs].some((part) => part.name === member)
        ? parent.file
        : undefined;
    case "enum":
      return parent.values.some((value) => value.name === member) ? parent.file : undefined;
    default:
      return undefined;
  }
}

class ReflectionFailure extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(clipText(message, MAX_STATUS_TEXT));
  }
}

interface Request {
  host: string;
  messageRequest:
    | {
        case: "fileByFilename" | "fileContainingSymbol" | "allExtensionNumbersOfType";
        value: string;
      }
    | { case: "listServices"; value: string }
    | {
        case: "fileContainingExtension";
        value: { containingType: string; extensionNumber: number };
      }
    | { case: undefined; value?: undefined };
}

/** What one view of the descriptor set answers. */
class View {
  constructor(
    private readonly listed: readonly string[],
    private readonly hidden: ReadonlySet<string>,
    private readonly bytes: ReadonlyMap<string, Uint8Array>,
  ) {}

  list(): string[] {
    return [...this.listed];
  }

  visible(file: DescFile | undefined): DescFile | undefined {
    return file && !this.hidden.has(fileName(file)) ? file : undefined;
  }

  /** The file and the imports not yet sent on this stream, as buf built them. */
  files(file: DescFile, sent: Set<string>): Uint8Array[] {
    return withImports(file)
      .filter((each, i) => i === 0 || !sent.has(fileName(each)))
      .map((each) => {
        sent.add(fileName(each));
        return this.bytes.get(fileName(each)) as Uint8Array;
      });
  }

  answer(request: Request, sent: Set<string>): object {
    const registry = contractRegistry();
    const { case: kind, value } = request.messageRequest;
    switch (kind) {
      case "listServices":
        return {
          case: "listServicesResponse",
          value: { service: this.list().map((name) => ({ name })) },
        };
      case "fileByFilename": {
        const file = this.visible(registry.getFile(value));
        if (!file) {
          throw new ReflectionFailure(CODE.NOT_FOUND, `file not found: ${value}`);
        }
        return this.descriptors(file, sent);
      }
      case "fileContainingSymbol": {
        const file = this.visible(fileOfSymbol(value));
        if (!file) throw new ReflectionFailure(CODE.NOT_FOUND, `symbol not found: ${value}`);
        return this.descriptors(file, sent);
      }
      case "fileContainingExtension": {
        const extendee = registry.getMessage(value.containingType);
        const extension = extendee && registry.getExtensionFor(extendee, value.extensionNumber);
        const file = this.visible(extension?.file);
        if (!file) {
          throw new ReflectionFailure(
            CODE.NOT_FOUND,
            `extension not found: ${value.containingType} ${value.extensionNumber}`,
          );
        }
        return this.descriptors(file, sent);
      }
      case "allExtensionNumbersOfType": {
        const extendee = this.visible(registry.getMessage(value)?.file) && value;
        if (!extendee) throw new ReflectionFailure(CODE.NOT_FOUND, `type not found: ${value}`);
        const numbers = [...registry]
          .filter((type) => type.kind === "extension" && type.extendee.typeName === value)
          .filter((type) => this.visible(type.file))
          .map((type) => (type.kind === "extension" ? type.number : 0))
          .sort((a, b) => a - b);
        return {
          case: "allExtensionNumbersResponse",
          value: { baseTypeName: value, extensionNumber: numbers },
        };
      }
      default:
        throw new ReflectionFailure(CODE.INVALID_ARGUMENT, "the request names no question");
    }
  }

  private descriptors(file: DescFile, sent: Set<string>) {
    return {
      case: "fileDescriptorResponse",
      value: { fileDescriptorProto: this.files(file, sent) },
    };
  }
}

/**
 * Reflection of one server: three views of the descriptor set, picked per stream by who asks
 * (ReflectionView). Files that declare an internal service are shown only to mesh identities; such
 * a file may declare no other service, and no file shown to others may import it.
 */
export class Reflection {
  private readonly views: Record<ReflectionView, View>;

  constructor(options: ReflectionOptions) {
    const registry = contractRegistry();
    const bytes = descriptorFiles();
    const internal = new Set(options.internal);
    const hidden = new Set<string>();
    for (const name of internal) {
      const service = registry.getService(name);
      if (!service) throw new Error(`reflection: ${name} is not in the descriptor set`);
      const others = service.file.services.filter((other) => !internal.has(other.typeName));
      if (others.length > 0) {
        throw new Error(
          `reflection: ${name} shares ${fileName(service.file)} with ${others.map((s) => s.typeName).join(", ")}; an internal service needs a file of its own`,
        );
      }
      hidden.add(fileName(service.file));
    }
    for (const file of registry.files) {
      if (hidden.has(fileName(file))) continue;
      const leaked = withImports(file).find((each) => hidden.has(fileName(each)));
      if (leaked) {
        throw new Error(`reflection: ${fileName(file)} imports the internal ${fileName(leaked)}`);
      }
    }
    const publicApi = options.publicApi ?? options.served.filter((name) => !internal.has(name));
    const publicServed = options.served.filter((name) => !internal.has(name));
    const none = new Set<string>();
    this.views = {
      mesh: new View([...options.served, ...INFRA_SERVICES], none, bytes),
      direct: new View([...publicServed, ...INFRA_SERVICES], hidden, bytes),
      edge: new View([...publicApi, ...INFRA_SERVICES], hidden, bytes),
    };
  }

  /** The services a view lists. */
  list(view: ReflectionView): string[] {
    return this.views[view].list();
  }

  /**
   * Adds grpc.reflection.v1 and v1alpha to `server`; `viewOf` says, once per stream, who asks.
   */
  addToServer(
    server: Pick<grpc.Server, "addService">,
    viewOf: (call: grpc.ServerDuplexStream<unknown, unknown>) => ReflectionView,
  ): void {
    for (const version of ["v1", "v1alpha"]) {
      const registry = contractRegistry();
      const schema = (name: string) => {
        const found = registry.getMessage(`grpc.reflection.${version}.${name}`);
        if (!found) throw new Error(`grpc.reflection.${version} is not in the descriptor set`);
        return found;
      };
      const requestSchema = schema("ServerReflectionRequest");
      const responseSchema = schema("ServerReflectionResponse");
      const service = `grpc.reflection.${version}.ServerReflection`;
      server.addService(
        {
          ServerReflectionInfo: {
            path: `/${service}/ServerReflectionInfo`,
            requestStream: true,
            responseStream: true,
            requestSerialize: (message: Message) => Buffer.from(toBinary(requestSchema, message)),
            requestDeserialize: (bytes: Buffer) => fromBinary(requestSchema, bytes),
            responseSerialize: (message: Message) => Buffer.from(toBinary(responseSchema, message)),
            responseDeserialize: (bytes: Buffer) => fromBinary(responseSchema, bytes),
          },
        } as grpc.ServiceDefinition,
        {
          ServerReflectionInfo: (call: grpc.ServerDuplexStream<Message, Message>) =>
            this.serve(call, viewOf(call as never), responseSchema),
        },
      );
    }
  }

  private serve(
    call: grpc.ServerDuplexStream<Message, Message>,
    view: ReflectionView,
    responseSchema: DescMessage,
  ) {
    const sent = new Set<string>();
    call.on("data", (message: Message) => {
      const request = message as unknown as Request;
      let messageResponse: object;
      try {
        messageResponse = this.views[view].answer(request, sent);
      } catch (error) {
        if (!(error instanceof ReflectionFailure)) throw error;
        messageResponse = {
          case: "errorResponse",
          value: { errorCode: error.code, errorMessage: error.message },
        };
      }
      const response = create(responseSchema, {
        validHost: request.host,
        originalRequest: message,
        messageResponse,
      } as never);
      // A caller that asks without reading the answers waits: the answers do not pile up here.
      if (!call.write(response)) {
        call.pause();
        call.once("drain", () => call.resume());
      }
    });
    call.on("end", () => call.end());
  }
}
