import type * as grpc from "@grpc/grpc-js";
import type { CallOptions } from "../context.js";
import type { RequestOf, ResponseOf, ServiceDefinition } from "../contract.js";
import type { ClientMiddleware } from "../middleware/index.js";

type Builtin = Date | Uint8Array | string | number | boolean | undefined;

/** A message with any field left out: the client fills in the proto defaults. */
export type DeepPartial<T> = T extends Builtin
  ? T
  : T extends readonly (infer U)[]
    ? DeepPartial<U>[]
    : T extends object
      ? { [K in keyof T]?: DeepPartial<T[K]> }
      : T;

/** A promise client for a generated service: one method per rpc, errors as ServiceError. */
export type Client<S extends ServiceDefinition> = {
  [K in keyof S]: S[K] extends { responseStream: true }
    ? (
        request: DeepPartial<RequestOf<S[K]>>,
        options?: CallOptions,
      ) => AsyncIterable<ResponseOf<S[K]>>
    : (request: DeepPartial<RequestOf<S[K]>>, options?: CallOptions) => Promise<ResponseOf<S[K]>>;
} & {
  /** Resolves once the channel is connected, or rejects at the deadline. */
  waitForReady(timeoutMs: number): Promise<void>;
  /**
   * Whether the channel is connected, or connects within readyWaitMs and the call's deadline,
   * as a retried rpc waits before it is sent. False at once when the call is cancelled. For a
   * caller that would write something only the dependency can settle.
   */
  ready(options?: CallOptions): Promise<boolean>;
  close(): void;
};

export interface ClientOptions {
  /** Deadline for calls that set none (5 s). */
  defaultTimeoutMs?: number;
  /** The chain every call goes through, outermost first; defaultClientMiddleware by default. */
  middleware?: readonly ClientMiddleware[];
  /**
   * Rpcs to retry on UNAVAILABLE although their contract does not promise a repeat is harmless:
   * for a caller that knows more, e.g. one that always sets CreateOrder's `request_id`.
   */
  alsoRetry?: readonly string[];
  /**
   * The client dials a service's replicas and balances over them itself, as a service's clients
   * of its dependencies do: it hedges unary reads (`hedged` in kit/contract.ts), and it pings
   * often enough to drop a hung replica within 4 s (DIRECT_KEEPALIVE). Off by default, for a
   * client of the front door: Envoy hedges the same reads and health-checks the replicas.
   */
  direct?: boolean;
  /**
   * How long a call the client retries waits for the channel to be ready (within its deadline)
   * before it is sent; after that it fails fast with UNAVAILABLE, as every call does on a channel
   * that cannot connect. Bridges a dependency's restart. 1000 ms by default.
   */
  readyWaitMs?: number;
  /** How to reach the server: kit/security/tls.ts channelCredentials (mutual TLS); plaintext by default. */
  transport?: { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions };
}
