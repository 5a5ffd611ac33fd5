// grpc-js refuses some requests itself, before a handler or any middleware sees them: a unary or
// server-streaming call with no request message or with two, a message that does not decompress
// or is too large, an encoding or a grpc-timeout it cannot read. It answers them INTERNAL,
// UNIMPLEMENTED or RESOURCE_EXHAUSTED, without google.rpc details, and nothing logs or counts
// them. The interceptor here sends each as the client's mistake it is, with details, and reports
// it to the kit. The DEADLINE_EXCEEDED of grpc-js's own deadline timer gains details too. A
// deadline or a caller's reset that comes before the request ended, where no handler has begun,
// is reported too.
import type * as grpc from "@grpc/grpc-js";
import { isValidTraceId } from "@opentelemetry/api";
import { packageOf } from "../contract.js";
import { Code, ServiceError } from "../errors.js";
import { xRequestIdOf } from "../middleware/x-request-id.js";
import { statusOf } from "./guard.js";
import { streamGone } from "./http2-stream.js";

/** A call grpc-js refused: what the kit sends, and how many request messages grpc-js read. */
export interface Refusal {
  error: ServiceError;
  messages: number;
  /** When the call began (performance.now()), if not just now. */
  startedAt?: number;
}

/** What the kit is told of a call grpc-js refused; `call` is grpc-js's own, as interceptors get it. */
export type Refused = (
  path: string,
  refusal: Refusal,
  call: grpc.ServerInterceptingCallInterface,
) => void;

type SentStatus = Parameters<grpc.ServerInterceptingCallInterface["sendStatus"]>[0];

const DETAILS = "grpc-status-details-bin";

const malformed = (message: string) =>
  new ServiceError(Code.INVALID_ARGUMENT, message, { reason: "MALFORMED_REQUEST" });

/**
 * grpc-js's refusals, by code and the start of their text, what the kit sends instead, and how
 * many request messages grpc-js had read (1 unless given).
 */
const REFUSALS: [Code, string, (text: string) => ServiceError, number?][] = [
  [
    Code.UNIMPLEMENTED,
    "Received no request message",
    () => malformed("the call carried no request message; this rpc takes exactly one"),
    0,
  ],
  [
    Code.UNIMPLEMENTED,
    "Received a second request message",
    () => malformed("the call carried more than one request message; this rpc takes exactly one"),
    2,
  ],
  [
    Code.INTERNAL,
    "Failed to decompress message",
    () => malformed("the request message does not decompress as its grpc-encoding says"),
  ],
  [
    Code.INTERNAL,
    "Invalid grpc-timeout value",
    (text) =>
      malformed(
        `grpc-timeout: ${text.slice(text.indexOf('"'))} is not a timeout (up to 8 digits and a unit: H, M, S, m, u or n)`,
      ),
    0,
  ],
  [
    Code.UNIMPLEMENTED,
    "Received message compressed with unsupported encoding",
    (text) =>
      new ServiceError(
        Code.UNIMPLEMENTED,
        `grpc-encoding: ${text.slice(text.indexOf('"'))} is not supported (identity, gzip or deflate)`,
        {
          reason: "UNSUPPORTED_ENCODING",
        },
      ),
  ],
  [
    Code.RESOURCE_EXHAUSTED,
    "Received message",
    (text) => new ServiceError(Code.RESOURCE_EXHAUSTED, text, { reason: "REQUEST_TOO_LARGE" }),
  ],
];

/** The refusal in a status grpc-js sent of its own accord; undefined for any other status. */
export function refusalOf(status: SentStatus): Refusal | undefined {
  // The kit's own statuses carry details; grpc-js's never do.
  if (status.metadata?.get(DETAILS).length) return undefined;
  const text = status.details ?? "";
  for (const [code, start, error, messages = 1] of REFUSALS) {
    if (status.code === code && text.startsWith(start)) return { error: error(text), messages };
  }
  return undefined;
}

/**
 * grpc-js's own deadline timer ended the call. Once its handler has begun, its context learns of
 * it, as of a cancel, so it is logged and counted already; the status only gains its details.
 */
const deadlinePassed = (status: SentStatus) =>
  status.code === Code.DEADLINE_EXCEEDED &&
  status.details === "Deadline exceeded" &&
  !status.metadata?.get(DETAILS).length;

/** What grpc-js's call tells of its request, as the call's start() takes it. */
type Listener = Parameters<grpc.ServerInterceptingCallInterface["start"]>[0];

/** A call whose caller reset it, or lost its connection, before its request ended. */
export const resetBeforeItsEnd = () =>
  new ServiceError(Code.CANCELLED, "the caller reset the call before its request ended", {
    reason: "CANCELLED",
  });

/**
 * What the guard keeps of one call. A unary or server-streaming handler begins as the request
 * ends; an end that comes after the call was answered or cancelled (a caller's reset ends its
 * stream too) starts no handler, and the guard reports the call, which no handler will. One
 * object per call, read by the shared functions below through the call.
 */
class Guard implements Listener {
  readonly startedAt = performance.now();
  messages = 0;
  requestEnded = false;
  answered = false;
  listener: Listener | undefined;

  constructor(
    readonly method: grpc.ServerMethodDefinition<unknown, unknown>,
    readonly call: grpc.ServerInterceptingCallInterface,
    readonly send: grpc.ServerInterceptingCallInterface["sendStatus"],
    readonly start: grpc.ServerInterceptingCallInterface["start"],
    readonly refused: Refused,
  ) {}

  /** Before its handler began: a handler that waits for the request's end still waits. */
  get beforeHandler(): boolean {
    return !this.method.requestStream && !this.requestEnded;
  }

  get domain(): string {
    const path = this.method.path;
    return packageOf(path.slice(1, path.lastIndexOf("/")));
  }

  report(error: ServiceError): void {
    const { messages, startedAt } = this;
    this.refused(this.method.path, { error, messages, startedAt }, this.call);
  }

  onReceiveMetadata(metadata: grpc.Metadata): void {
    this.listener?.onReceiveMetadata(metadata);
  }

  onReceiveMessage(message: unknown): void {
    this.messages++;
    this.listener?.onReceiveMessage(message);
  }

  onReceiveHalfClose(): void {
    if (this.answered) return;
    this.requestEnded = true;
    this.listener?.onReceiveHalfClose();
  }

  onCancel(): void {
    // grpc-js may still pass on the stream's end after this; answered, it starts nothing.
    if (!this.answered && this.beforeHandler) {
      this.answered = true;
      this.report(resetBeforeItsEnd());
    }
    this.listener?.onCancel();
  }
}

const GUARD = Symbol("framing guard");
type Guarded = grpc.ServerInterceptingCallInterface & { [GUARD]: Guard };

function guardedStart(this: Guarded, listener: Listener): void {
  const guard = this[GUARD];
  guard.listener = listener;
  guard.start.call(this, guard);
}

function guardedSendStatus(this: Guarded, status: SentStatus): void {
  const guard = this[GUARD];
  // A second status (grpc-js refusing a message it read on after the deadline) goes nowhere.
  if (guard.answered) {
    guard.send.call(this, status);
    return;
  }
  guard.answered = true;
  if (deadlinePassed(status)) {
    const error = new ServiceError(Code.DEADLINE_EXCEEDED, "the call's deadline passed");
    guard.send.call(this, statusOf(error, guard.domain));
    if (guard.beforeHandler) guard.report(error);
    return;
  }
  const refusal = status.code === Code.OK ? undefined : refusalOf(status);
  if (!refusal) {
    guard.send.call(this, status);
    return;
  }
  guard.send.call(this, statusOf(refusal.error, guard.domain));
  // grpc-js reads a reset stream's end as the request's: a caller gone is no malformed request.
  if (streamGone(this)) guard.report(resetBeforeItsEnd());
  else guard.refused(guard.method.path, refusal, this);
}

/**
 * A server interceptor, first in the server's list: it sees the call grpc-js itself answers from,
 * so its refusals pass through here too. Every other status goes on unchanged.
 */
export function framingGuard(refused: Refused): grpc.ServerInterceptor {
  return (method, call) => {
    const guarded = call as Guarded;
    guarded[GUARD] = new Guard(method, call, call.sendStatus, call.start, refused);
    guarded.start = guardedStart;
    guarded.sendStatus = guardedSendStatus;
    // Typed as grpc-js's class, but any call chains; this one is the call, with its status watched.
    return call as grpc.ServerInterceptingCall;
  };
}

/** A call of a method this server does not serve. */
export interface UnknownCall {
  /** Its path, without a query, cut to 256 characters. */
  method: string;
  /** The proto service it names, when this server serves that service. */
  service?: string;
  /** The caller's address. */
  peer: string;
  /** Its x-request-id and the trace its traceparent names, as a served call's log line has. */
  xRequestId: string;
  traceId?: string;
}

/** A W3C traceparent: version (not ff), trace id, parent id, flags. */
const TRACEPARENT = /^(?!ff)[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}(?:-|$)/;

/** The longest method path an unknown method's ErrorInfo repeats. */
const PATH_MAX = 256;

/**
 * grpc-js answers a path it has no handler for before any interceptor runs: UNIMPLEMENTED,
 * without details. This gives every such path a handler that answers the same code with them,
 * in the domain of the service the path names if this server serves it, else in `domain`, and
 * tells `seen` of each such call, which no middleware sees. It needs grpc-js's private handler
 * map; if that moves, grpc-js's own answer stands.
 */
export function answerUnknownMethods(
  server: grpc.Server,
  domain: string,
  seen: (call: UnknownCall) => void = () => {},
): void {
  const handlers = (server as unknown as { handlers?: unknown }).handlers;
  if (!(handlers instanceof Map)) return;
  const registered = handlers.get.bind(handlers) as (path: string) => unknown;
  const served = (service: string) =>
    [...handlers.keys()].some((path) => String(path).startsWith(`/${service}/`));
  handlers.get = (path: string) => {
    const handler = registered(path);
    if (handler !== undefined || typeof path !== "string") return handler;
    // A query is no part of a gRPC path, and may hold what should not be repeated (a token).
    const method = path.split("?")[0] as string;
    const service = method.slice(1, Math.max(method.lastIndexOf("/"), 1));
    const known = served(service);
    let text = `this server does not serve ${service || method}`;
    if (known) text = `${service} has no method ${method.slice(method.lastIndexOf("/") + 1)}`;
    if (method !== path) text = `${method}?…: a gRPC path has no query`;
    const error = new ServiceError(Code.UNIMPLEMENTED, text, {
      reason: "UNKNOWN_METHOD",
      metadata: { method: method.slice(0, PATH_MAX) },
    });
    const status = statusOf(error, known ? packageOf(service) : domain);
    return {
      type: "bidi",
      path,
      serialize: (bytes: Buffer) => bytes,
      deserialize: (bytes: Buffer) => bytes,
      // Answers at once, whatever the call's kind; nothing the caller sends is read.
      func: (stream: grpc.ServerDuplexStream<unknown, unknown>) => {
        // As a served call's: the caller's x-request-id or a new one, and the trace of a
        // traceparent OpenTelemetry would take (version ff and an all-zero trace id it refuses).
        const xRequestId = xRequestIdOf(stream.metadata);
        const [traceparent] = stream.metadata.get("traceparent");
        const traceId = TRACEPARENT.exec(typeof traceparent === "string" ? traceparent : "")?.[1];
        seen({
          method: method.slice(0, PATH_MAX),
          ...(known && { service }),
          peer: stream.getPeer(),
          xRequestId,
          ...(traceId && isValidTraceId(traceId) && { traceId }),
        });
        stream.emit("error", status);
      },
    };
  };
}
