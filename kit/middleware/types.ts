import type { Metadata } from "@grpc/grpc-js";
import type { CallContext, CallOptions, CallStatus } from "../context.js";
import type { MethodInfo } from "../contract.js";

/**
 * The rest of a served call's chain: the next middleware, and at the end the handler. Unary
 * methods resolve to the response; server-streaming methods give (or resolve to) the messages.
 */
export type ServerNext = (
  request: unknown,
  ctx: CallContext,
) => Promise<unknown> | AsyncIterable<unknown>;

/**
 * A cross-cutting concern of served calls. `wrap` runs once per method when the server starts,
 * so a middleware can decide per rpc (skip a method, precompute its labels) at no per-call cost;
 * the function it returns runs on every call. The first middleware of a list is the outermost.
 */
export interface ServerMiddleware {
  readonly name: string;
  wrap(method: MethodInfo, next: ServerNext): ServerNext;
}

/** One outgoing call as client middleware see and shape it. */
export interface ClientCall {
  readonly method: MethodInfo;
  /** What the caller passed for this call: its parent context, timeout, signal, metadata. */
  readonly options: CallOptions;
  /** The metadata that will be sent; middleware add headers here. */
  readonly metadata: Metadata;
  /** When the call expires, in ms since the epoch; undefined for none. */
  deadline: number | undefined;
  /** The call is cancelled as soon as any of these aborts. */
  readonly signals: AbortSignal[];
  /** Calls `listener` once, with the status the caller got (OK, or the error's). */
  onFinish(listener: (status: CallStatus) => void): void;
}

/** The rest of an outgoing call's chain; at the end, the channel. */
export type ClientNext = (
  request: unknown,
  call: ClientCall,
) => Promise<unknown> | AsyncIterable<unknown>;

/** A cross-cutting concern of outgoing calls; `wrap` runs once per method of a client. */
export interface ClientMiddleware {
  readonly name: string;
  wrap(method: MethodInfo, next: ClientNext): ClientNext;
}

/** Wraps `core` in `middleware`, the first outermost. Done once per method, never per call. */
export function chain<Next>(
  middleware: readonly { wrap(method: MethodInfo, next: Next): Next }[],
  method: MethodInfo,
  core: Next,
): Next {
  let next = core;
  for (let i = middleware.length - 1; i >= 0; i--) {
    next = (middleware[i] as { wrap(method: MethodInfo, next: Next): Next }).wrap(method, next);
  }
  return next;
}
