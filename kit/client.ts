import * as grpc from "@grpc/grpc-js";
import type { CallContext } from "./context.js";
import { fromGrpcError } from "./errors.js";
import type { RequestOf, ResponseOf, ServiceDefinition } from "./service.js";

/** Per-call options of a typed client. */
export interface CallOptions {
  /** The incoming call this one serves: its deadline, cancellation and request id carry over. */
  ctx?: CallContext;
  /** Deadline for this call; the client's default applies when unset, never past ctx's. */
  timeoutMs?: number;
  signal?: AbortSignal;
  metadata?: grpc.Metadata;
}

/** A promise client for a generated service: one method per rpc, errors as ServiceError. */
export type Client<S extends ServiceDefinition> = {
  [K in keyof S]: S[K] extends { responseStream: true }
    ? (request: RequestOf<S[K]>, options?: CallOptions) => AsyncIterable<ResponseOf<S[K]>>
    : (request: RequestOf<S[K]>, options?: CallOptions) => Promise<ResponseOf<S[K]>>;
} & {
  /** Resolves once the channel is connected, or rejects at the deadline. */
  waitForReady(timeoutMs: number): Promise<void>;
  close(): void;
};

export interface ClientOptions {
  /** Full proto service name, for the retry policy's method config. */
  serviceName: string;
  /** Methods safe to retry on UNAVAILABLE (PascalCase proto names). */
  idempotentMethods?: readonly string[];
  /** Deadline for calls that set none. */
  defaultTimeoutMs?: number;
  /**
   * How long an idempotent call waits for the channel to be ready (within its deadline) before
   * it is sent; after that it fails fast with UNAVAILABLE, as every call does on a channel that
   * cannot connect. Bridges a dependency's restart. 1000 ms by default.
   */
  readyWaitMs?: number;
}

/**
 * "host:port" dials one address (resolved by DNS, so a headless Service name spreads across its
 * pods); "a:1,b:2" dials a fixed list of IP replicas; a target with a scheme ("dns:///…",
 * "ipv4:…") passes through. Every form is balanced round_robin.
 */
export function channelTarget(address: string): string {
  if (/^[a-z0-9]+:(\/\/|[^\d])/i.test(address)) return address;
  const parts = address.split(",").map((part) => part.trim());
  if (parts.length === 1) return `dns:${parts[0]}`;
  if (parts.every((part) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(part)))
    return `ipv4:${parts.join(",")}`;
  if (parts.every((part) => /^\[[0-9a-f:]+\]:\d+$/i.test(part))) return `ipv6:${parts.join(",")}`;
  throw new Error(`"${address}": a list of replicas must be IP:port pairs; use a DNS name instead`);
}

function serviceConfig(options: ClientOptions): string {
  const methods = options.idempotentMethods ?? [];
  return JSON.stringify({
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: methods.length
      ? [
          {
            name: methods.map((method) => ({ service: options.serviceName, method })),
            retryPolicy: {
              maxAttempts: 4,
              initialBackoff: "0.05s",
              maxBackoff: "1s",
              backoffMultiplier: 2,
              retryableStatusCodes: ["UNAVAILABLE"],
            },
          },
        ]
      : [],
  });
}

const channelOptions = {
  // A dependency that restarts is back within a few hundred ms: try to reconnect at least that
  // often (grpc-js waits 1 s at first and up to 2 min by default). A refused connection to a
  // process that is down costs next to nothing.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 250,
  "grpc.keepalive_time_ms": 30_000,
  "grpc.keepalive_timeout_ms": 10_000,
  "grpc.keepalive_permit_without_calls": 1,
  "grpc.enable_retries": 1,
  // Nothing reads channelz here; skip its per-call bookkeeping.
  "grpc.enable_channelz": 0,
};

/**
 * Cancels a call as soon as any of `signals` aborts (at once if one already has). Returns the
 * function that stops listening, for when the call ends: a caller's signal may outlive it.
 */
function linkCancellation(signals: readonly AbortSignal[], cancel: () => void): () => void {
  for (const signal of signals) {
    if (signal.aborted) cancel();
    else signal.addEventListener("abort", cancel, { once: true });
  }
  return () => {
    for (const signal of signals) signal.removeEventListener("abort", cancel);
  };
}

/** One long-lived channel to a service, with a typed promise method per rpc. */
export function createClient<S extends ServiceDefinition>(
  definition: S,
  address: string,
  options: ClientOptions,
): Client<S> {
  const channel = new grpc.Client(channelTarget(address), grpc.credentials.createInsecure(), {
    ...channelOptions,
    "grpc.service_config": serviceConfig(options),
  });
  const defaultTimeoutMs = options.defaultTimeoutMs ?? 5_000;
  const readyWaitMs = options.readyWaitMs ?? 1_000;
  const idempotent = new Set(options.idempotentMethods ?? []);

  /**
   * Runs `send` once the channel is ready, or once `readyWaitMs` (or the deadline) has passed,
   * whichever is first; at once when it is ready now, the usual case.
   */
  const whenReady = (deadline: number, send: () => void) => {
    if (channel.getChannel().getConnectivityState(true) === grpc.connectivityState.READY) {
      send();
      return;
    }
    // Sent either way: a call cancelled meanwhile is cancelled at once, one past its deadline
    // fails with DEADLINE_EXCEEDED, one on a channel still down with UNAVAILABLE.
    channel.waitForReady(Math.min(deadline, Date.now() + readyWaitMs), () => send());
  };

  const callSetup = (call: CallOptions = {}) => {
    let deadline = Date.now() + (call.timeoutMs ?? defaultTimeoutMs);
    const parentDeadline = call.ctx?.deadline?.getTime();
    if (parentDeadline !== undefined) deadline = Math.min(deadline, parentDeadline);
    const metadata = call.metadata?.clone() ?? new grpc.Metadata();
    if (call.ctx) metadata.set("x-request-id", call.ctx.requestId);
    const signals = [call.ctx?.signal, call.signal].filter((s): s is AbortSignal => !!s);
    return { deadline, metadata, signals };
  };

  const client: Record<string, unknown> = {
    waitForReady: (timeoutMs: number) =>
      new Promise<void>((resolve, reject) =>
        channel.waitForReady(Date.now() + timeoutMs, (error) =>
          error ? reject(error) : resolve(),
        ),
      ),
    close: () => channel.close(),
  };

  for (const [name, method] of Object.entries(definition)) {
    client[name] = method.responseStream
      ? (request: unknown, call?: CallOptions) => {
          const { deadline, metadata, signals } = callSetup(call);
          const stream = channel.makeServerStreamRequest(
            method.path,
            method.requestSerialize,
            method.responseDeserialize,
            request,
            metadata,
            { deadline },
          );
          const unlink = linkCancellation(signals, () => stream.cancel());
          return (async function* () {
            try {
              for await (const message of stream) yield message;
            } catch (error) {
              throw fromGrpcError(error as grpc.ServiceError);
            } finally {
              unlink();
              stream.cancel();
            }
          })();
        }
      : (request: unknown, call?: CallOptions) =>
          new Promise((resolve, reject) => {
            const { deadline, metadata, signals } = callSetup(call);
            const send = () => {
              let unlink = () => {};
              const pending = channel.makeUnaryRequest(
                method.path,
                method.requestSerialize,
                method.responseDeserialize,
                request,
                metadata,
                { deadline },
                (error, response) => {
                  unlink();
                  if (error) reject(fromGrpcError(error));
                  else resolve(response);
                },
              );
              unlink = linkCancellation(signals, () => pending.cancel());
            };
            const rpc = method.path.slice(method.path.lastIndexOf("/") + 1);
            if (idempotent.has(rpc)) whenReady(deadline, send);
            else send();
          });
  }
  return client as Client<S>;
}
