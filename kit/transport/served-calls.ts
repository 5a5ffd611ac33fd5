// The calls the kit serves, as grpc-js hands them over: each runs the middleware chain to its
// handler in a ServerCallContext, and its outcome (a message, a stream, a failure) goes back as
// grpc-js expects it, with google.rpc details on a failure. server.ts wires them up.
import { once } from "node:events";
import * as grpc from "@grpc/grpc-js";
import { type CallStatus, ServerCallContext } from "../context.js";
import type { MethodInfo } from "../contract.js";
import { Code, ServiceError } from "../errors.js";
import type { ServerNext } from "../middleware/index.js";
import { Malformed } from "./decode.js";
import { type Refusal, resetBeforeItsEnd } from "./framing.js";
import { statusOf } from "./guard.js";
import { streamGone } from "./http2-stream.js";
import { endBeforeCut, type OpenStreams } from "./stream-ends.js";

type Call = grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>;

function deadlineOf(call: Pick<Call, "getDeadline">): Date | undefined {
  const raw = call.getDeadline();
  return raw instanceof Date ? raw : Number.isFinite(raw) ? new Date(raw) : undefined;
}

/** The context of a served call; it learns of a cancellation from the call itself. */
function contextOf(call: Call, method: MethodInfo): ServerCallContext {
  return new ServerCallContext(method, call.metadata, deadlineOf(call), call);
}

/**
 * Lets the middleware see a call that grpc-js refused before its handler (kit/transport/framing.ts), so it
 * is logged, counted and traced like any other: they run around a core that fails with the
 * refusal, then learn that the caller got it. The answer is already sent, whatever they return.
 */
export function observeRefusal(
  handle: ServerNext,
  method: MethodInfo,
  { error, messages, startedAt }: Refusal,
  call: grpc.ServerInterceptingCallInterface,
): void {
  // grpc-js keeps the request's metadata private on the call it answers from; empty if it moves.
  const metadata = (call as { metadata?: unknown }).metadata;
  const ctx = new ServerCallContext(
    method,
    metadata instanceof grpc.Metadata ? metadata : new grpc.Metadata(),
    deadlineOf(call),
    undefined,
    startedAt,
  );
  new Promise((resolve) => resolve(handle(new Malformed(undefined, error, messages), ctx)))
    .then(async (result) => {
      // A server stream's chain runs as it is read: read it to its end (its handler refuses
      // the Malformed request), so that what its middleware took, a stream's place, goes back.
      if (isAsyncIterable(result)) for await (const _ of result);
    })
    .catch(() => {})
    .then(() => ctx.finish({ code: error.code, details: error.message, reason: reasonOf(error) }));
}

const isAsyncIterable = (value: unknown): value is AsyncIterable<unknown> =>
  typeof (value as AsyncIterable<unknown> | undefined)?.[Symbol.asyncIterator] === "function";

/**
 * The status a failure is sent as, and as middleware see it. A ServiceError keeps its code and
 * details; anything else got past the status mapping (or there is none) and is INTERNAL.
 */
function failureOf(
  error: unknown,
  domain: string,
): [grpc.StatusObject, Omit<CallStatus, "durationMs">] {
  const failure =
    error instanceof ServiceError
      ? error
      : new ServiceError(Code.INTERNAL, "internal error", { reason: "INTERNAL" }, error);
  const sent = statusOf(failure, domain);
  return [
    sent,
    { code: sent.code, details: sent.details, cause: failure.cause, reason: reasonOf(failure) },
  ];
}

const OK: Omit<CallStatus, "durationMs"> = { code: Code.OK, details: "" };

/** The ErrorInfo reason a failure is sent with (encodeStatus): its own, else its code's name. */
const reasonOf = (failure: ServiceError) => failure.details.reason ?? Code[failure.code];

/**
 * The request the chain gets: the call's, unless its stream is already gone (reset, or its
 * connection lost). grpc-js reads such an end as the request's, even when the caller never
 * finished it, and would run the handler on it; the chain's core refuses it instead, so the
 * call is logged and counted CANCELLED and writes nothing.
 */
function requestOf(call: Call): unknown {
  if (!streamGone(call)) return call.request;
  return new Malformed(undefined, resetBeforeItsEnd());
}

const unencodable = (error: unknown) =>
  new ServiceError(
    Code.INTERNAL,
    "the response could not be encoded",
    { reason: "INTERNAL" },
    error,
  );

export function unary(
  handle: ServerNext,
  method: MethodInfo,
  domain: string,
  encode: (message: unknown) => Buffer,
): grpc.handleUnaryCall<unknown, Buffer> {
  return (call, callback) => {
    const ctx = contextOf(call, method);
    const fail = (error: unknown) => {
      const [sent, seen] = failureOf(error, domain);
      ctx.settle();
      callback(sent);
      ctx.finish(seen);
    };
    let pending: Promise<unknown>;
    try {
      pending = handle(requestOf(call), ctx) as Promise<unknown>;
    } catch (error) {
      pending = Promise.reject(error);
    }
    pending.then((response) => {
      let bytes: Buffer;
      try {
        bytes = encode(response);
      } catch (error) {
        fail(unencodable(error));
        return;
      }
      ctx.settle();
      callback(null, bytes);
      ctx.finish(OK);
    }, fail);
  };
}

export function serverStreaming(
  handle: ServerNext,
  method: MethodInfo,
  domain: string,
  encode: (message: unknown) => Buffer,
  open: OpenStreams,
): grpc.handleServerStreamingCall<unknown, Buffer> {
  return (call) => {
    const ctx = contextOf(call, method);
    let ended = false;
    const endWith = (error: ServiceError) => {
      if (ended) return;
      ended = true;
      const [sent, seen] = failureOf(error, domain);
      ctx.finish(seen);
      ctx.stop();
      call.emit("error", sent);
    };
    const unwatch = endBeforeCut(call, open, endWith);
    const run = async () => {
      const messages = (await handle(requestOf(call), ctx)) as AsyncIterable<unknown>;
      for await (const message of messages) {
        if (ctx.signal.aborted) return;
        let bytes: Buffer;
        try {
          bytes = encode(message);
        } catch (error) {
          throw unencodable(error);
        }
        if (!call.write(bytes)) await once(call, "drain", { signal: ctx.signal });
      }
    };
    run()
      .then(
        () => {
          if (ended) return;
          ctx.settle();
          call.end();
          ctx.finish(OK);
        },
        (error: unknown) => {
          if (ended) return;
          const [sent, seen] = failureOf(error, domain);
          ctx.settle();
          call.emit("error", sent);
          ctx.finish(seen);
          // A middleware may end a stream whose handler still waits (auth, at the token's expiry).
          ctx.stop();
        },
      )
      .finally(unwatch);
  };
}
