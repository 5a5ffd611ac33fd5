import type { Http2Session } from "node:http2";
import { Metadata, type ServerUnaryCall, status } from "@grpc/grpc-js";

type ServerSurfaceCall = Pick<
  ServerUnaryCall<unknown, unknown>,
  "getPeer" | "getAuthContext" | "cancelled" | "once"
>;

import type { MethodInfo } from "./contract.js";
import { Code, ServiceError } from "./errors.js";
import { type AuthContext, authContextOf } from "./security/tls.js";
import { type CuttableCall, closedByServer, trackCall } from "./transport/connection-closing.js";
import {
  type DeliveredStatus,
  onStreamClosed,
  resetStream,
  streamOf,
} from "./transport/http2-stream.js";

/** The status a caller got, as middleware see it once the call is over. */
export interface CallStatus {
  code: status;
  /** The status message the caller got. */
  details: string;
  /** What caused a failure, when the caller only sees a generic status (INTERNAL): for the log. */
  cause?: unknown;
  /** The failure's ErrorInfo reason, as the caller got it (TOKEN_EXPIRED, say). */
  reason?: string;
  /** From the call's arrival (or start, for a client) to its status. */
  durationMs: number;
}

/** A typed slot for a value middleware attaches to a call, for example the caller's identity. */
export interface ContextKey<T> {
  readonly description: string;
  /** Never set: carries T. */
  readonly type?: T;
}

export const contextKey = <T>(description: string): ContextKey<T> => ({ description });

/** What a handler and its middleware know about the call they serve, beyond the request. */
export interface CallContext {
  /** The rpc, as the contract states it. */
  readonly method: MethodInfo;
  /** The caller's metadata. */
  readonly metadata: Metadata;
  /** The caller's deadline, if it set one. Downstream calls inherit it. */
  readonly deadline: Date | undefined;
  /** Aborted when the caller cancels or the deadline passes. Downstream calls inherit it. */
  readonly signal: AbortSignal;
  /** The caller's address as grpc-js reports it, for example "127.0.0.1:50412". */
  readonly peer: string;
  /** What the transport knows of the caller: its TLS certificate when the channel has one. */
  readonly auth: AuthContext;
  /** Fields that every log line about this call carries, such as `x_request_id`. */
  readonly logFields: Record<string, unknown>;
  /** A value a middleware attached to this call. */
  get<T>(key: ContextKey<T>): T | undefined;
  set<T>(key: ContextKey<T>, value: T): void;
  /**
   * Calls `listener` once, with the status the caller got, after it was sent; or, for a call
   * whose record is held (holdRecord), once the transport is done with its reply.
   */
  onFinish(listener: (status: CallStatus) => void): void;
  /** Calls `listener` once the call's status is handed to the transport, held record or not. */
  onSent(listener: () => void): void;
  /**
   * Holds the call's record (the onFinish listeners) until the transport is done with its reply,
   * for a reply that may wait in HTTP/2 until its caller reads it. Written out in full, the
   * record is the status sent, with its time to the hand-over; reset first (dropReply, the
   * caller's cancel, its connection lost or cut), what the caller got instead, timed to the reset.
   */
  holdRecord(): void;
  /**
   * Calls `listener` once the transport is done with the call: its reply handed in full to
   * HTTP/2 (which waits for the caller to read), or the caller gone. Later than onSent.
   */
  onWritten(listener: () => void): void;
  /**
   * Drops a reply the caller is not reading: resets the call's HTTP/2 stream, which frees what
   * HTTP/2 still holds of it, and onWritten's listeners run.
   */
  dropReply(): void;
}

/** Per-call options of a typed client. */
export interface CallOptions {
  /** The served call this one is made for: its deadline, cancellation and x-request-id pass on. */
  ctx?: CallContext;
  /** Deadline for this call; the client's default applies when unset, never past ctx's. */
  timeoutMs?: number;
  signal?: AbortSignal;
  metadata?: Metadata;
}

const RUNNING = 0;
const CANCELLED = 1;
const FINISHED = 2;

/**
 * The context of one served call. The server core creates it and reports the end through
 * cancel() and finish(); handler tests and background work create detached ones (no call).
 */
/**
 * Whether `ctx`'s deadline has passed at `now`, as the caller's clock may have it. The caller's
 * deadline starts before ours, by the time its request took to reach us, and its reset takes as
 * long to arrive: it lands at about our own deadline, often just before our timer fires, and
 * sooner by however long the request waited here. So within 20 ms of the deadline counts as
 * past, however short the call's time: with a deadline of a few ms, that is all of it.
 */
export function deadlinePassed(
  ctx: Pick<CallContext, "deadline">,
  now: number = Date.now(),
): boolean {
  return ctx.deadline !== undefined && now >= ctx.deadline.getTime() - 20;
}

export class ServerCallContext implements CallContext, CuttableCall {
  readonly logFields: Record<string, unknown> = {};
  private state = RUNNING;
  /** When the caller's cancel arrived (ms since the epoch), if it did while the call ran. */
  private cancelledAt: number | undefined;
  /** The same moment by performance.now(): when the caller got its status. */
  private cancelledSince: number | undefined;
  // Made on first use: most calls never look at their signal, and an AbortController per call
  // was a measurable share of a cheap rpc's CPU.
  private controller: AbortController | undefined;
  private listeners: ((status: CallStatus) => void)[] | undefined;
  private sentListeners: (() => void)[] | undefined;
  /** Set by holdRecord: made only for the calls that hold their record. */
  private held: HeldReply | undefined;
  private values: Map<ContextKey<unknown>, unknown> | undefined;

  // Set when the server cut the call's connection (a shutdown's end) before its caller left.
  private cut = false;
  private readonly untrack: (() => void) | undefined;

  constructor(
    readonly method: MethodInfo,
    readonly metadata: Metadata,
    readonly deadline: Date | undefined,
    private readonly call?: ServerSurfaceCall,
    /** When the call began (performance.now()), if before this context. */
    private readonly started = performance.now(),
  ) {
    // Taken as the call starts: a stream forgets its connection once it is destroyed.
    const connection = call && streamOf(call)?.session;
    this.untrack = connection && trackCall(connection as Http2Session, this);
  }

  get signal(): AbortSignal {
    if (!this.controller) {
      this.controller = new AbortController();
      // Listened for only once someone looks: most calls never do, and a listener per call is
      // a measurable share of a cheap rpc. finish() reads the call's own flag instead.
      if (this.state === RUNNING && this.call?.cancelled) this.markCancelled();
      this.call?.once("cancelled", () => this.cancel());
      if (this.state === CANCELLED) this.controller.abort(this.cancelReason());
    }
    return this.controller.signal;
  }

  get peer(): string {
    return this.call?.getPeer() ?? "local";
  }

  get auth(): AuthContext {
    return this.call ? authContextOf(this.call) : {};
  }

  get<T>(key: ContextKey<T>): T | undefined {
    return this.values?.get(key) as T | undefined;
  }

  set<T>(key: ContextKey<T>, value: T): void {
    this.values ??= new Map();
    this.values.set(key, value);
  }

  onFinish(listener: (status: CallStatus) => void): void {
    this.listeners ??= [];
    this.listeners.push(listener);
  }

  onSent(listener: () => void): void {
    this.sentListeners ??= [];
    this.sentListeners.push(listener);
  }

  holdRecord(): void {
    // A detached call has no transport to wait for.
    if (this.call) this.held ??= { session: streamOf(this.call)?.session };
  }

  onWritten(listener: () => void): void {
    // grpc-js says "cancelled" once a call is over, whichever way it ended; without a call, the
    // finish is the end.
    if (!this.call) this.onFinish(() => listener());
    else if (this.call.cancelled) queueMicrotask(listener);
    else this.call.once("cancelled", listener);
  }

  dropReply(): void {
    if (this.call && resetStream(this.call) && this.held) this.held.droppedAt = performance.now();
  }

  /** The server answered the call itself (it is shutting down): the work on it stops. */
  stop(): void {
    this.settle();
    this.controller ??= new AbortController();
    this.controller.abort();
  }

  /** The caller went away or its deadline passed: aborts the signal, unless already answered. */
  cancel(): void {
    if (this.state !== RUNNING) return;
    this.markCancelled();
    this.controller?.abort(this.cancelReason());
  }

  /**
   * The server is cutting this call's connection: unless its caller left first, the end is ours;
   * so it is of a held record's reply still unwritten.
   */
  cutByServer(): void {
    const running = this.state === RUNNING && !this.call?.cancelled;
    if (running || this.held?.sentAt !== undefined) this.cut = true;
  }

  private markCancelled(): void {
    this.state = CANCELLED;
    this.cancelledAt = Date.now();
    this.cancelledSince = performance.now();
  }

  /** Whether the caller's cancel was its deadline (deadlinePassed, at the cancel). */
  private cancelledAtDeadline(): boolean {
    return deadlinePassed(this, this.cancelledAt);
  }

  /**
   * Why the signal aborts: at the deadline, DEADLINE_EXCEEDED, which the calls the signal cuts
   * report (kit/client failureOf), as their own deadline would have; else the caller's cancel.
   */
  private cancelReason(): ServiceError | undefined {
    return this.cancelledAtDeadline()
      ? new ServiceError(Code.DEADLINE_EXCEEDED, "the deadline of the call it serves passed")
      : undefined;
  }

  /**
   * The answer is about to be sent: from now on a cancellation no longer counts (grpc-js reports
   * "cancelled" after every finished call too). Returns whether the caller was gone already.
   */
  settle(): boolean {
    if (this.state === RUNNING && this.call?.cancelled) this.markCancelled();
    const cancelled = this.state === CANCELLED;
    if (this.state === RUNNING) this.state = FINISHED;
    return cancelled;
  }

  /**
   * Tells the listeners what the caller got: `sent`, unless the call was cancelled before it was
   * answered, in which case the caller saw DEADLINE_EXCEEDED or CANCELLED instead, or the server
   * cut its connection as a shutdown ended, with the call still running: UNAVAILABLE, the
   * server's doing, as clients and Envoy report a connection lost. A held record (holdRecord)
   * waits until the call's stream closes.
   */
  finish(sent: Omit<CallStatus, "durationMs">): void {
    const cancelled =
      this.state === CANCELLED || (this.state === RUNNING && this.call?.cancelled === true);
    this.settle();
    if (this.sentListeners) for (const listener of this.sentListeners) listener();
    if (this.held && this.listeners && !cancelled && this.recordOnClose(sent, this.held)) return;
    this.untrack?.();
    if (!this.listeners) return;
    // A cancelled call's caller had its status when it left or its deadline passed, however long
    // the handler ran on; that moment is known when the signal was watched, else it is now.
    const durationMs =
      (cancelled && this.cancelledSince !== undefined ? this.cancelledSince : performance.now()) -
      this.started;
    let got: CallStatus = { ...sent, durationMs };
    if (cancelled && sent.code !== status.DEADLINE_EXCEEDED) {
      got = this.cancelledAtDeadline()
        ? { code: status.DEADLINE_EXCEEDED, details: "Deadline exceeded", durationMs }
        : this.cut
          ? { code: status.UNAVAILABLE, details: "Cut off as its server shut down", durationMs }
          : { code: status.CANCELLED, details: "Cancelled by the caller", durationMs };
    }
    for (const listener of this.listeners) listener(got);
  }

  /** Records the call once its stream closes; false if it has none to wait for. */
  private recordOnClose(sent: Omit<CallStatus, "durationMs">, held: HeldReply): boolean {
    held.sentAt = performance.now();
    return onStreamClosed(this.call, (delivered) => {
      this.untrack?.();
      const got = delivered ? this.deliveredStatus(sent, delivered, held) : this.resetStatus(held);
      for (const listener of this.listeners ?? []) listener(got);
    });
  }

  /** What a reply written out in full told its caller: `sent`, unless grpc-js sent another. */
  private deliveredStatus(
    sent: Omit<CallStatus, "durationMs">,
    delivered: DeliveredStatus,
    held: HeldReply,
  ): CallStatus {
    // grpc-js's deadline timer replaces a status whose reply still waits to be read.
    if (delivered.code !== sent.code) {
      return { ...delivered, durationMs: performance.now() - this.started };
    }
    return { ...sent, durationMs: (held.sentAt ?? performance.now()) - this.started };
  }

  /** What the caller of a reply reset before it was written out got: the reset's code. */
  private resetStatus(held: HeldReply): CallStatus {
    if (held.droppedAt !== undefined) {
      const unreadMs = Math.round(held.droppedAt - (held.sentAt ?? held.droppedAt));
      return {
        code: status.CANCELLED,
        details: `Dropped by the server, unread ${unreadMs} ms after it was sent`,
        durationMs: held.droppedAt - this.started,
      };
    }
    const durationMs = performance.now() - this.started;
    if (deadlinePassed(this)) {
      return { code: status.DEADLINE_EXCEEDED, details: "Deadline exceeded", durationMs };
    }
    if (this.cut) {
      return { code: status.UNAVAILABLE, details: "Cut off as its server shut down", durationMs };
    }
    if (held.session && closedByServer(held.session)) {
      return {
        code: status.UNAVAILABLE,
        details: "Cut off as its server closed the connection",
        durationMs,
      };
    }
    return {
      code: status.CANCELLED,
      details: "Cancelled by the caller before it read its reply",
      durationMs,
    };
  }
}

/** What a call whose record waits for its reply to be written out keeps (holdRecord). */
interface HeldReply {
  /** The connection it runs on: a stream forgets it once it is destroyed. */
  session: Http2Session | undefined;
  /** When its status was handed to grpc-js (performance.now()): its record waits from then. */
  sentAt?: number;
  /** When dropReply reset its stream. */
  droppedAt?: number;
}

/**
 * A context for running a handler outside a served call, as the handler tests do. Its signal
 * aborts with `signal`, if given.
 */
export function detachedContext(
  method: MethodInfo,
  options: { metadata?: Metadata; deadline?: Date; signal?: AbortSignal } = {},
): ServerCallContext {
  const ctx = new ServerCallContext(method, options.metadata ?? new Metadata(), options.deadline);
  if (options.signal?.aborted) ctx.cancel();
  else options.signal?.addEventListener("abort", () => ctx.cancel(), { once: true });
  return ctx;
}
