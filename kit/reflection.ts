import { BinaryReader } from "@bufbuild/protobuf/wire";
import type { PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { descriptorSet } from "./descriptor.js";

/** The FileDescriptorProtos of a FileDescriptorSet, byte for byte as buf built them. */
function filesOf(set: Buffer): Buffer[] {
  const reader = new BinaryReader(set);
  const files: Buffer[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) files.push(Buffer.from(reader.bytes()));
    else reader.skip(wireType);
  }
  return files;
}

/** The proto package of a FileDescriptorProto (field 2). */
function packageOfFile(file: Buffer): string {
  const reader = new BinaryReader(file);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 2) return reader.string();
    reader.skip(wireType);
  }
  return "";
}

/**
 * A FileDescriptorProto without the services (field 6) whose full names are in `hidden`; every
 * other field is copied byte for byte.
 */
function withoutServices(file: Buffer, hidden: ReadonlySet<string>): Buffer {
  const pkg = packageOfFile(file);
  const reader = new BinaryReader(file);
  const kept: Buffer[] = [];
  while (reader.pos < reader.len) {
    const start = reader.pos;
    const [field, wireType] = reader.tag();
    if (field === 6) {
      const service = new BinaryReader(reader.bytes());
      let name = "";
      while (service.pos < service.len) {
        const [inner, innerType] = service.tag();
        if (inner === 1) name = service.string();
        else service.skip(innerType);
      }
      if (hidden.has(`${pkg}.${name}`)) continue;
    } else {
      reader.skip(wireType);
    }
    kept.push(file.subarray(start, reader.pos));
  }
  return Buffer.concat(kept);
}

/**
 * Server reflection (v1 and v1alpha) over the descriptor set from `npm run generate`, which also
 * holds grpc.health.v1: grpcurl can list, describe and call everything with no local protos.
 * The files are served as buf built them, with comments and every google import, less the
 * proto services named in `hidden` (the internal ones, for callers outside the mesh).
 */
export function reflectionService(hidden: readonly string[] = []): ReflectionService {
  const set = new Set(hidden);
  const files = filesOf(descriptorSet()).map((file) =>
    set.size ? withoutServices(file, set) : file,
  );
  const root = { "shop.descriptors": { fileDescriptorProtos: files } };
  return new ReflectionService(root as unknown as PackageDefinition);
}

type Registrar = Pick<ReflectionService, "addToServer">;
type AddService = Parameters<ReflectionService["addToServer"]>[0];
type Definition = Parameters<AddService["addService"]>[0];
type Handler = (...args: unknown[]) => unknown;

/**
 * reflectionService, built on its first call rather than when the server starts: indexing the
 * descriptor set (every file, with its comments, for v1 and v1alpha) was a tenth of a service's
 * start and ~10 MB that most processes, never asked to reflect, kept for nothing.
 */
export function lazyReflectionService(hidden: readonly string[] = []): Registrar {
  let handlers: Map<string, Handler> | undefined;
  const handlerOf = (path: string): Handler => {
    if (!handlers) {
      const built = new Map<string, Handler>();
      reflectionService(hidden).addToServer({
        addService(definition: Definition, implementation: object) {
          for (const [name, handler] of Object.entries(implementation)) {
            built.set((definition[name] as { path: string }).path, handler as Handler);
          }
        },
      } as AddService);
      handlers = built;
    }
    return handlers.get(path) as Handler;
  };
  return {
    addToServer(server: AddService) {
      // The same services and methods, from an index of no files; each call goes to the real one.
      const empty = { "shop.descriptors": { fileDescriptorProtos: [] } };
      new ReflectionService(empty as unknown as PackageDefinition).addToServer({
        addService(definition: Definition, implementation: object) {
          const dispatch: Record<string, Handler> = {};
          for (const name of Object.keys(implementation)) {
            const path = (definition[name] as { path: string }).path;
            dispatch[name] = (...args) => handlerOf(path)(...args);
          }
          server.addService(definition, dispatch);
        },
      } as AddService);
    },
  };
}

/**
 * Reflection answers an unknown symbol or file with an error message that quotes it: clipped,
 * so that a reply to a request near the size limit still fits the client's.
 */
export function clipReflectionError(message: unknown): unknown {
  const error = (message as { errorResponse?: { errorMessage?: unknown } } | null)?.errorResponse;
  if (typeof error?.errorMessage === "string" && error.errorMessage.length > 1024) {
    error.errorMessage = `${error.errorMessage.slice(0, 1024)}…`;
  }
  return message;
}
