import {
  createFileRegistry,
  type DescField,
  type DescMessage,
  type DescMethod,
  type FileRegistry,
  fromBinary,
  isFieldSet,
  ScalarType,
} from "@bufbuild/protobuf";
import {
  FileDescriptorSetSchema,
  MethodOptions_IdempotencyLevel,
  MethodOptionsSchema,
} from "@bufbuild/protobuf/wkt";
import type { MethodDefinition } from "@grpc/grpc-js";
import { descriptorSet } from "./descriptor.js";

/** A generated grpc-js service definition, as ts-proto emits it. */
// biome-ignore lint/suspicious/noExplicitAny: each generated method has its own message types.
export type ServiceDefinition = { [method: string]: MethodDefinition<any, any> };

export type RequestOf<M> = M extends { requestDeserialize(bytes: Buffer): infer Req } ? Req : never;
export type ResponseOf<M> = M extends { responseDeserialize(bytes: Buffer): infer Res }
  ? Res
  : never;

/** What an rpc's `option idempotency_level` promises about calling it again. */
export type Idempotency = "NO_SIDE_EFFECTS" | "IDEMPOTENT" | "IDEMPOTENCY_UNKNOWN";

export type RpcKind = "unary" | "server_streaming" | "client_streaming" | "bidi_streaming";

/** One rpc as the contract states it: what middleware and the generators know about a method. */
export interface MethodInfo {
  /** Full proto service name, for example "shop.user.v1.UserService". */
  readonly service: string;
  /** The rpc's proto name, for example "GetUser". */
  readonly rpc: string;
  /** "/shop.user.v1.UserService/GetUser", the HTTP/2 path of a call. */
  readonly path: string;
  readonly kind: RpcKind;
  readonly idempotency: Idempotency;
  /** False when the rpc leaves `idempotency_level` unset, or is not in the descriptor set. */
  readonly declared: boolean;
  /** Full name of the request message, when the descriptor set has the rpc. */
  readonly requestType?: string;
  /** The request has `page_size` (AIP-158): the reply is a page, up to PAGE_BYTES encoded. */
  readonly paged: boolean;
  /**
   * The request has `request_id` (AIP-155): a repeat with the same one answers as the first
   * call did, so such a call may be repeated when it has one, whatever its idempotency level.
   */
  readonly keyed: boolean;
}

/**
 * True when the rpc may be repeated after it reached a server: a retry after UNAVAILABLE or a
 * lost reply cannot do harm. Clients' retry policy and Envoy's retry routes both follow this.
 */
export const retriable = (method: MethodInfo) => method.idempotency !== "IDEMPOTENCY_UNKNOWN";

/**
 * True when a call of the rpc is hedged: a unary read (NO_SIDE_EFFECTS) whose attempt has no
 * answer after hedgeAfterS goes to another replica too, and the first answer wins, so a replica
 * that hangs (stopped, stalled, its reply lost) costs a read that long, not its deadline. Writes
 * are not hedged, even idempotent ones: two attempts at once would contend for the same rows.
 * Clients' service config and Envoy's routes both follow this.
 */
export const hedged = (method: MethodInfo) =>
  method.kind === "unary" && method.idempotency === "NO_SIDE_EFFECTS";

/**
 * How long a hedged rpc's attempt may go unanswered before the next one is sent. Far above a
 * read's slowest answers under load here (tens of ms), so that hedges are rare and never a load
 * of their own.
 */
export const HEDGE_AFTER_S = 0.5;

/**
 * The same for a list rpc: a page of up to 2 MB takes longer than a read of one row, seconds
 * through a busy edge as JSON, and each hedge of it builds the whole page again, adding to the
 * load that made it slow.
 */
export const HEDGE_PAGE_AFTER_S = 2;

/** How long a hedged rpc's attempt may go unanswered before the next one is sent. */
export const hedgeAfterS = (method: MethodInfo) =>
  method.paged ? HEDGE_PAGE_AFTER_S : HEDGE_AFTER_S;

/** The AIP-155 idempotency key of a call of a keyed rpc, when its caller gave one. */
export const idempotencyKeyOf = (method: MethodInfo, request: unknown): string | undefined => {
  const key = method.keyed ? (request as { requestId?: unknown } | null)?.requestId : undefined;
  return typeof key === "string" && key !== "" ? key : undefined;
};

const IDEMPOTENCY: Record<MethodOptions_IdempotencyLevel, Idempotency> = {
  [MethodOptions_IdempotencyLevel.IDEMPOTENCY_UNKNOWN]: "IDEMPOTENCY_UNKNOWN",
  [MethodOptions_IdempotencyLevel.NO_SIDE_EFFECTS]: "NO_SIDE_EFFECTS",
  [MethodOptions_IdempotencyLevel.IDEMPOTENT]: "IDEMPOTENT",
};

let registry: FileRegistry | undefined;

/**
 * The descriptor set from `npm run generate`, as a registry of its files, services and messages.
 * Its source comments are dropped: nothing here reads them, and they are most of the set's size
 * (reflection serves the files' original bytes, comments included).
 */
export function contractRegistry(): FileRegistry {
  if (!registry) {
    const set = fromBinary(FileDescriptorSetSchema, descriptorSet());
    for (const file of set.file) file.sourceCodeInfo = undefined;
    registry = createFileRegistry(set);
  }
  return registry;
}

function infoOf(method: DescMethod): MethodInfo {
  const options = method.proto.options;
  return {
    service: method.parent.typeName,
    rpc: method.name,
    path: `/${method.parent.typeName}/${method.name}`,
    kind: method.methodKind,
    idempotency: IDEMPOTENCY[method.idempotency],
    declared:
      options !== undefined && isFieldSet(options, MethodOptionsSchema.field.idempotencyLevel),
    requestType: method.input.typeName,
    paged: method.input.fields.some((field) => field.name === "page_size"),
    keyed: method.input.fields.some((field) => field.name === "request_id"),
  };
}

/** Every rpc of a proto service in the descriptor set; throws for a service it lacks. */
export function contractMethods(serviceName: string): MethodInfo[] {
  const service = contractRegistry().getService(serviceName);
  if (!service) {
    throw new Error(`${serviceName} is not in the descriptor set: run npm run generate`);
  }
  return service.methods.map(infoOf);
}

/** The proto package of a full service name: "shop.user.v1.UserService" → "shop.user.v1". */
export const packageOf = (serviceName: string) =>
  serviceName.slice(0, serviceName.lastIndexOf("."));

/** The full proto service name of a generated definition: "shop.user.v1.UserService". */
export function serviceNameOf(definition: ServiceDefinition): string {
  const first = Object.values(definition)[0];
  if (!first) throw new Error("a service definition without methods");
  return first.path.slice(1, first.path.lastIndexOf("/"));
}

/**
 * The MethodInfo of each method of a generated definition, by its key in the definition. Rpcs
 * missing from the descriptor set (a service built from another proto, such as the benchmark's
 * echo) get what the definition says: their kind, and no idempotency promise.
 */
export function methodsOf(definition: ServiceDefinition): Record<string, MethodInfo> {
  const service = contractRegistry().getService(serviceNameOf(definition));
  const methods: Record<string, MethodInfo> = {};
  for (const [key, method] of Object.entries(definition)) {
    const rpc = method.path.slice(method.path.lastIndexOf("/") + 1);
    const described = service?.methods.find((candidate) => candidate.name === rpc);
    methods[key] = described
      ? infoOf(described)
      : {
          service: method.path.slice(1, method.path.lastIndexOf("/")),
          rpc,
          path: method.path,
          kind: method.requestStream
            ? method.responseStream
              ? "bidi_streaming"
              : "client_streaming"
            : method.responseStream
              ? "server_streaming"
              : "unary",
          idempotency: "IDEMPOTENCY_UNKNOWN",
          declared: false,
          paged: false,
          keyed: false,
        };
  }
  return methods;
}

// ---------------------------------------------------------------------------------------------
// Partial messages

/** Messages ts-proto maps to native values (Date, string[], plain objects): left as given. */
const NATIVE = /^google\.protobuf\.(Timestamp|FieldMask|Struct|Value|ListValue|\w+Value)$/;

const INT64 = new Set([
  ScalarType.INT64,
  ScalarType.UINT64,
  ScalarType.SINT64,
  ScalarType.FIXED64,
  ScalarType.SFIXED64,
]);

function zero(field: DescField & { fieldKind: "scalar" }): unknown {
  if (field.scalar === ScalarType.STRING) return "";
  if (field.scalar === ScalarType.BOOL) return false;
  if (field.scalar === ScalarType.BYTES) return Buffer.alloc(0);
  // ts-proto's forceLong=string: int64 fields are decimal strings.
  return INT64.has(field.scalar) ? "0" : 0;
}

type Complete = (partial: Record<string, unknown>) => Record<string, unknown>;

const completers = new Map<string, Complete>();

/**
 * A function that turns a partial message (as ts-proto types it) into a whole one: every field
 * left out gets its proto3 default, in nested messages too, so the generated encoder can write
 * it. Fields of a oneof and proto3 `optional` fields stay absent, as their encoders expect.
 */
export function completer(message: DescMessage): Complete {
  const cached = completers.get(message.typeName);
  if (cached) return cached;
  const defaults: [string, () => unknown][] = [];
  const nested: [string, Complete, boolean][] = [];
  // Registered before the fields are read, so a recursive message finds itself.
  const complete: Complete = (partial) => {
    const whole: Record<string, unknown> = { ...partial };
    for (const [name, value] of defaults) if (whole[name] === undefined) whole[name] = value();
    for (const [name, inner, repeated] of nested) {
      const value = whole[name];
      if (value === undefined) continue;
      whole[name] = repeated
        ? (value as Record<string, unknown>[]).map(inner)
        : inner(value as Record<string, unknown>);
    }
    return whole;
  };
  completers.set(message.typeName, complete);
  for (const field of message.fields) {
    if (field.oneof || field.proto.proto3Optional) continue;
    const name = field.localName;
    switch (field.fieldKind) {
      case "scalar": {
        const value = zero(field);
        defaults.push([name, () => (Buffer.isBuffer(value) ? Buffer.alloc(0) : value)]);
        break;
      }
      case "enum":
        defaults.push([name, () => 0]);
        break;
      case "map":
        defaults.push([name, () => ({})]);
        break;
      case "list":
        defaults.push([name, () => []]);
        if (field.listKind === "message" && !NATIVE.test(field.message.typeName)) {
          nested.push([name, completer(field.message), true]);
        }
        break;
      case "message":
        if (!NATIVE.test(field.message.typeName)) {
          nested.push([name, completer(field.message), false]);
        }
        break;
    }
  }
  return complete;
}

/** The completer of a message in the descriptor set by its full name, if the set has it. */
export function completerOf(typeName: string | undefined): Complete | undefined {
  const message = typeName ? contractRegistry().getMessage(typeName) : undefined;
  return message && completer(message);
}
