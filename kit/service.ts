import type { MethodDefinition } from "@grpc/grpc-js";
import type { CallContext } from "./context.js";

/** A generated grpc-js service definition, as ts-proto emits it. */
// biome-ignore lint/suspicious/noExplicitAny: each generated method has its own message types.
export type ServiceDefinition = { [method: string]: MethodDefinition<any, any> };

export type RequestOf<M> = M extends { requestDeserialize(bytes: Buffer): infer Req } ? Req : never;
export type ResponseOf<M> = M extends { responseDeserialize(bytes: Buffer): infer Res }
  ? Res
  : never;

/**
 * A service's handlers: plain async functions from request message to response message, or async
 * generators for server-streaming methods. They throw ServiceError for anything but success.
 */
export type Handlers<S extends ServiceDefinition> = {
  [K in keyof S]: S[K] extends { responseStream: true }
    ? (request: RequestOf<S[K]>, ctx: CallContext) => AsyncIterable<ResponseOf<S[K]>>
    : (request: RequestOf<S[K]>, ctx: CallContext) => Promise<ResponseOf<S[K]>>;
};

/** A service to serve: its full proto name, its generated definition and its handlers. */
export interface ServiceImplementation<S extends ServiceDefinition = ServiceDefinition> {
  /** Full proto name, for example "shop.user.v1.UserService"; also its health service name. */
  name: string;
  definition: S;
  handlers: Handlers<S>;
}

/** The proto package of a full service name: "shop.user.v1.UserService" → "shop.user.v1". */
export const packageOf = (serviceName: string) =>
  serviceName.slice(0, serviceName.lastIndexOf("."));
