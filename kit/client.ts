import * as grpc from "@grpc/grpc-js";
import { type CallContext, type CallOptions, type CallStatus, deadlinePassed } from "./context.js";
import {
  completerOf,
  HEDGE_AFTER_S,
  hedged,
  type MethodInfo,
  methodsOf,
  type RequestOf,
  type ResponseOf,
  retriable,
  type ServiceDefinition,
} from "./contract.js";
import { Code, fromGrpcError, ServiceError, ShuttingDown } from "./errors.js";
import {
  type ClientCall,
  type ClientMiddleware,
  type ClientNext,
  chain,
  defaultClientMiddleware,
} from "./middleware/index.js";

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

/**
 * "host:port" dials one address (resolved by DNS, so a headless Service name spreads across its
 * pods); "a:1,b:2" dials a fixed list of IP replicas; a target with a scheme ("dns:///…",
 * "ipv4:…") passes through. Every form is balanced round_robin.
 */
export function channelTarget(address: string): string {
  if (/^[a-z0-9]+:(\/\/|[^\d])/i.test(address) || /^ipv[46]:/i.test(address)) return address;
  const parts = address.split(",").map((part) => part.trim());
  if (parts.length === 1) return `dns:${parts[0]}`;
  if (parts.every((part) => /^\d+\.\d+\.\d+\.\d+:\d+$/.test(part)))
    return `ipv4:${parts.join(",")}`;
  if (parts.every((part) => /^\[[0-9a-f:]+\]:\d+$/i.test(part))) return `ipv6:${parts.join(",")}`;
  throw new Error(`"${address}": a list of replicas must be IP:port pairs; use a DNS name instead`);
}

/** How a client retries an rpc its contract lets it repeat. */
export const RETRY_POLICY = {
  maxAttempts: 4,
  initialBackoff: "0.05s",
  maxBackoff: "1s",
  backoffMultiplier: 2,
  retryableStatusCodes: ["UNAVAILABLE"],
};

/** The rpcs a client retries on UNAVAILABLE: those its contract lets it repeat, and `alsoRetry`. */
function retriedMethods(
  definition: ServiceDefinition,
  options: Pick<ClientOptions, "alsoRetry">,
): MethodInfo[] {
  return Object.values(methodsOf(definition)).filter(
    (method) => retriable(method) || options.alsoRetry?.includes(method.rpc),
  );
}

/** How a client hedges a read: the retry policy's attempts, sent HEDGE_AFTER_S apart. */
export const HEDGING_POLICY = {
  maxAttempts: RETRY_POLICY.maxAttempts,
  hedgingDelay: `${HEDGE_AFTER_S}s`,
  // An attempt answered UNAVAILABLE is followed by the next at once.
  nonFatalStatusCodes: RETRY_POLICY.retryableStatusCodes,
};

/**
 * The gRPC service config of a client: round_robin, and a retry policy on UNAVAILABLE for every
 * rpc whose `idempotency_level` makes a repeat harmless (plus `alsoRetry`), or with `direct` a
 * hedging policy instead for the unary reads. Other rpcs get only grpc's transparent retries, of
 * calls that never reached a server.
 */
export function serviceConfigFor(
  definition: ServiceDefinition,
  options: Pick<ClientOptions, "alsoRetry" | "direct"> = {},
): { loadBalancingConfig: object[]; methodConfig: object[] } {
  const names = (methods: MethodInfo[]) =>
    methods.map((method) => ({ service: method.service, method: method.rpc }));
  const retried = retriedMethods(definition, options);
  const hedgedHere = (method: MethodInfo) => options.direct === true && hedged(method);
  const reads = retried.filter(hedgedHere);
  const others = retried.filter((method) => !hedgedHere(method));
  return {
    loadBalancingConfig: [{ round_robin: {} }],
    methodConfig: [
      ...(reads.length ? [{ name: names(reads), hedgingPolicy: HEDGING_POLICY }] : []),
      ...(others.length ? [{ name: names(others), retryPolicy: RETRY_POLICY }] : []),
    ],
  };
}

/**
 * A direct client's keepalive: a ping 2 s after the last one's answer, given 2 s, so a hung
 * replica is dropped within 4 s. The calls on its connection then fail as "Connection dropped",
 * which the client sends once more when the rpc may be repeated, so a write waiting on the hung
 * replica (ReserveStock) goes through on another within its deadline. Until the drop, round
 * robin sends the replica its share of calls, and reads are hedged. The price: grpc-js also
 * drops a connection whose server sent GOAWAY (a shutdown, a maximum age) at its next ping,
 * cutting the calls still finishing on it. Only the rpcs the client repeats survive that, and
 * all of the order service's calls to its dependencies are such. Under 64 calls at once beside
 * two CPU hogs, no ping here went unanswered for even 0.5 s.
 */
const DIRECT_KEEPALIVE = {
  "grpc.keepalive_time_ms": 2_000,
  "grpc.keepalive_timeout_ms": 2_000,
};

const channelOptions = {
  // A dependency that restarts is back within a few hundred ms: try to reconnect at least that
  // often (grpc-js waits 1 s at first and up to 2 min by default). A refused connection to a
  // process that is down costs next to nothing.
  "grpc.initial_reconnect_backoff_ms": 100,
  "grpc.max_reconnect_backoff_ms": 250,
  // A server that hangs (stopped, its host frozen) keeps its connection open: the kernel still
  // acknowledges. Only an unanswered ping tells: within 15 s here, and DIRECT_KEEPALIVE's 4 s
  // for a client that balances over replicas itself.
  "grpc.keepalive_time_ms": 10_000,
  "grpc.keepalive_timeout_ms": 5_000,
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
  if (signals.length === 0) return () => {};
  for (const signal of signals) {
    if (signal.aborted) cancel();
    else signal.addEventListener("abort", cancel, { once: true });
  }
  return () => {
    for (const signal of signals) signal.removeEventListener("abort", cancel);
  };
}

/**
 * A reply cut short by the death of the replica that had begun it: behind Envoy, which cannot
 * retry a reply it has started to send and resets the stream (grpc-js: INTERNAL "Received
 * RST_STREAM with code …", which no server sends), or directly, when the connection drops
 * (UNAVAILABLE "Connection dropped"). The service config's retries never see either, because a
 * call is committed once its reply's headers arrive, so the client sends an rpc it may repeat
 * once more itself.
 */
function cutShort(error: grpc.ServiceError): boolean {
  return (
    (error.code === grpc.status.INTERNAL &&
      error.details.startsWith("Received RST_STREAM with code ") &&
      !error.details.includes("triggered by internal client error")) ||
    (error.code === grpc.status.UNAVAILABLE && error.details === "Connection dropped")
  );
}

/**
 * CANCELLED that this side never asked for: the server reset the call, as grpc-js does to the
 * calls still running when a shutdown's grace period ends. To the caller that is a server gone
 * away, like a dropped connection, and not its own cancel, which callers and Envoy never retry.
 */
function cancelledByServer(error: grpc.ServiceError, call: OutgoingCall): boolean {
  return error.code === grpc.status.CANCELLED && !call.signals.some((signal) => signal.aborted);
}

/** A failed call's error as the caller gets it. */
function failureOf(error: grpc.ServiceError, call: OutgoingCall): ServiceError {
  // Cancelled by a signal that says why in a ServiceError (a shutdown's grace period ending).
  const why = call.signals.find(
    (signal) => signal.aborted && signal.reason instanceof ServiceError,
  );
  if (error.code === grpc.status.CANCELLED && why) return why.reason as ServiceError;
  if (!cancelledByServer(error, call)) return fromGrpcError(error);
  return new ServiceError(Code.UNAVAILABLE, `the server ended the call: ${error.details}`);
}

/** One outgoing call. */
class OutgoingCall implements ClientCall {
  readonly metadata: grpc.Metadata;
  deadline: number | undefined;
  readonly signals: AbortSignal[] = [];
  private readonly started = performance.now();
  private listeners: ((status: CallStatus) => void)[] | undefined;

  constructor(
    readonly method: MethodInfo,
    readonly options: CallOptions,
  ) {
    this.metadata = options.metadata?.clone() ?? new grpc.Metadata();
  }

  onFinish(listener: (status: CallStatus) => void): void {
    this.listeners ??= [];
    this.listeners.push(listener);
  }

  finish(code: Code, details: string): void {
    if (!this.listeners) return;
    const status = { code, details, durationMs: performance.now() - this.started };
    for (const listener of this.listeners) listener(status);
  }
}

/** One long-lived channel to a service, with a typed promise method per rpc. */
export function createClient<S extends ServiceDefinition>(
  definition: S,
  address: string,
  options: ClientOptions = {},
): Client<S> {
  const channel = new grpc.Client(
    channelTarget(address),
    options.transport?.credentials ?? grpc.credentials.createInsecure(),
    {
      ...channelOptions,
      ...(options.direct && DIRECT_KEEPALIVE),
      ...options.transport?.options,
      "grpc.service_config": JSON.stringify(serviceConfigFor(definition, options)),
    },
  );
  const middleware =
    options.middleware ??
    defaultClientMiddleware({ defaultTimeoutMs: options.defaultTimeoutMs ?? 5_000 });
  const infos = methodsOf(definition);
  const readyWaitMs = options.readyWaitMs ?? 1_000;
  // grpc-js reads `waitForReady` in a service config but does not act on it, and its per-call
  // option waits until the deadline: the rpcs the client retries wait here, for at most
  // readyWaitMs, so that a dependency that stays down still fails fast.
  const retried = new Set(retriedMethods(definition, options).map((method) => method.path));

  /**
   * Calls `send` at once when the channel is ready (the usual case); otherwise once it is, or
   * once readyWaitMs or the deadline has passed, or the call is cancelled, whichever comes
   * first. Sent either way: on a channel still down it fails with UNAVAILABLE, past its
   * deadline with DEADLINE_EXCEEDED, and a cancelled call ends at once.
   */
  const whenReady = (call: OutgoingCall, send: () => void) => {
    if (channel.getChannel().getConnectivityState(true) === grpc.connectivityState.READY) {
      send();
      return;
    }
    let sent = false;
    let unlink = () => {};
    const go = () => {
      if (sent) return;
      sent = true;
      unlink();
      send();
    };
    unlink = linkCancellation(call.signals, go);
    if (sent) unlink();
    else channel.waitForReady(Math.min(call.deadline ?? Infinity, Date.now() + readyWaitMs), go);
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
    const info = infos[name] as MethodInfo;
    const core: ClientNext = method.responseStream
      ? (request, call) => {
          const outgoing = call as OutgoingCall;
          const stream = channel.makeServerStreamRequest(
            method.path,
            method.requestSerialize,
            method.responseDeserialize,
            request,
            outgoing.metadata,
            { deadline: outgoing.deadline ?? Number.POSITIVE_INFINITY },
          );
          const unlink = linkCancellation(outgoing.signals, () => stream.cancel());
          return (async function* () {
            let ended = false;
            try {
              for await (const message of stream) yield message;
              ended = true;
              outgoing.finish(Code.OK, "");
            } catch (error) {
              ended = true;
              const failure = failureOf(error as grpc.ServiceError, outgoing);
              outgoing.finish(failure.code, failure.message);
              throw failure;
            } finally {
              unlink();
              stream.cancel();
              // The caller stopped reading: the stream ends cancelled.
              if (!ended) outgoing.finish(Code.CANCELLED, "Cancelled by the caller");
            }
          })();
        }
      : (request, call) =>
          new Promise((resolve, reject) => {
            const outgoing = call as OutgoingCall;
            let resent = false;
            const send = () => {
              let unlink = () => {};
              const pending = channel.makeUnaryRequest(
                method.path,
                method.requestSerialize,
                method.responseDeserialize,
                request,
                outgoing.metadata,
                { deadline: outgoing.deadline ?? Number.POSITIVE_INFINITY },
                (error, response) => {
                  unlink();
                  const cut = error && (cutShort(error) || cancelledByServer(error, outgoing));
                  if (cut && !resent && retried.has(method.path)) {
                    resent = true;
                    return whenReady(outgoing, send);
                  }
                  if (error) {
                    const failure = failureOf(error, outgoing);
                    outgoing.finish(failure.code, failure.message);
                    reject(failure);
                  } else {
                    outgoing.finish(Code.OK, "");
                    resolve(response);
                  }
                },
              );
              unlink = linkCancellation(outgoing.signals, () => pending.cancel());
            };
            if (retried.has(method.path)) whenReady(outgoing, send);
            else send();
          });
    const handle = chain(middleware, info, core);
    const complete = completerOf(info.requestType);
    client[name] = (request: Record<string, unknown>, call: CallOptions = {}) =>
      handle(complete ? complete(request) : request, new OutgoingCall(info, call));
  }
  return client as Client<S>;
}

/**
 * A downstream failure as this service reports it: the caller's mistakes (unknown ids, short
 * stock) pass through with their details; an unreachable dependency is UNAVAILABLE. A deadline
 * names the dependency only when this service's own wait ran out, not `ctx`'s caller's.
 * `dependency` is the service called, as the answer names it ("product").
 */
export function fromDependency(dependency: string, error: unknown, ctx?: CallContext): Error {
  if (!(error instanceof ServiceError)) return error as Error;
  // This service's own shutdown cut the call: that is the answer, not the dependency.
  if (error instanceof ShuttingDown) return error;
  switch (error.code) {
    // A dependency that does not serve the call (an older build, in a rolling upgrade) is this
    // service's trouble, not an rpc its caller called wrong.
    case Code.UNIMPLEMENTED:
    case Code.UNAVAILABLE:
      // What grpc-js said (the addresses it dialled) goes to the log only.
      return new ServiceError(
        Code.UNAVAILABLE,
        `the ${dependency} service is unavailable`,
        { reason: "DEPENDENCY_UNAVAILABLE", metadata: { dependency } },
        error,
      );
    case Code.DEADLINE_EXCEEDED: {
      const callers = ctx !== undefined && deadlinePassed(ctx);
      return new ServiceError(
        Code.DEADLINE_EXCEEDED,
        `the deadline passed while calling the ${dependency} service`,
        { reason: "DEADLINE_EXCEEDED", ...(!callers && { metadata: { dependency } }) },
      );
    }
    default:
      return error;
  }
}
