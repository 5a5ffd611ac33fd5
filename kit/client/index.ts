// A typed promise client over one channel (docs/architecture.md, Retry policy in the contract):
// createClient puts together the parts beside it, a file each.
import * as grpc from "@grpc/grpc-js";
import type { CallOptions } from "../context.js";
import { completerOf, type MethodInfo, methodsOf, type ServiceDefinition } from "../contract.js";
import { Code } from "../errors.js";
import { type ClientNext, chain, defaultClientMiddleware } from "../middleware/index.js";
import { OutgoingCall } from "./call.js";
import { linkCancellation } from "./cancellation.js";
import { channelOptions, channelTarget, DIRECT_KEEPALIVE } from "./channel.js";
import { cancelledByServer, cutShort, failureOf } from "./failures.js";
import { retriedMethods, serviceConfigFor } from "./service-config.js";
import type { Client, ClientOptions } from "./types.js";

export { channelTarget } from "./channel.js";
export { fromDependency } from "./failures.js";
export { HEDGING_POLICY, RETRY_POLICY, serviceConfigFor } from "./service-config.js";
export type { Client, ClientOptions, DeepPartial } from "./types.js";

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
   * Calls `then(true)` at once when the channel is ready (the usual case); otherwise once it is,
   * or `then(false)` once readyWaitMs or `deadline` has passed, or one of `signals` aborts,
   * whichever comes first.
   */
  const whenReady = (
    signals: readonly AbortSignal[],
    deadline: number | undefined,
    then: (ready: boolean) => void,
  ) => {
    if (channel.getChannel().getConnectivityState(true) === grpc.connectivityState.READY) {
      then(true);
      return;
    }
    let done = false;
    let unlink = () => {};
    const end = (ready: boolean) => {
      if (done) return;
      done = true;
      unlink();
      then(ready);
    };
    unlink = linkCancellation(signals, () => end(false));
    if (done) unlink();
    else {
      const until = Math.min(deadline ?? Infinity, Date.now() + readyWaitMs);
      channel.waitForReady(until, (error) => end(!error));
    }
  };

  const client: Record<string, unknown> = {
    waitForReady: (timeoutMs: number) =>
      new Promise<void>((resolve, reject) =>
        channel.waitForReady(Date.now() + timeoutMs, (error) =>
          error ? reject(error) : resolve(),
        ),
      ),
    ready: (call: CallOptions = {}) =>
      new Promise<boolean>((resolve) =>
        whenReady(
          [call.ctx?.signal, call.signal].filter((signal) => signal !== undefined),
          call.ctx?.deadline?.getTime(),
          resolve,
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
                    return whenReady(outgoing.signals, outgoing.deadline, send);
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
            // Sent either way: on a channel still down it fails with UNAVAILABLE, past its deadline
            // with DEADLINE_EXCEEDED, and a cancelled call ends at once.
            if (retried.has(method.path)) whenReady(outgoing.signals, outgoing.deadline, send);
            else send();
          });
    const handle = chain(middleware, info, core);
    const complete = completerOf(info.requestType);
    client[name] = (request: Record<string, unknown>, call: CallOptions = {}) =>
      handle(complete ? complete(request) : request, new OutgoingCall(info, call));
  }
  return client as Client<S>;
}
