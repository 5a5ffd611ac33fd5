// The HTTP/2 stream under a grpc-js server call, which grpc-js keeps private: a reply nobody reads
// is dropped through it, and a connection that starts closing is watched through its session.
import { constants, type ServerHttp2Stream } from "node:http2";

interface Links {
  call?: unknown;
  nextCall?: unknown;
}

/** The HTTP/2 stream of a grpc-js server call, live or not; undefined if grpc-js's privates moved. */
function anyStreamOf(call: unknown): ServerHttp2Stream | undefined {
  // A handler's call holds the intercepting calls as `call`, each the next as `nextCall`, and
  // the last, grpc-js's own, the stream.
  let link = call;
  for (let depth = 0; link && depth < 8; depth++) {
    const { stream, call, nextCall } = link as { stream?: ServerHttp2Stream } & Links;
    if (stream) return stream;
    link = call ?? nextCall;
  }
  return undefined;
}

/** The HTTP/2 stream of a grpc-js server call, while it has its connection. */
export function streamOf(call: unknown): ServerHttp2Stream | undefined {
  const stream = anyStreamOf(call);
  return stream?.session ? stream : undefined;
}

/** True when a server call's stream is gone already: reset by its caller, or its connection lost. */
export function streamGone(call: unknown): boolean {
  const stream = anyStreamOf(call);
  return stream !== undefined && (stream.aborted || stream.destroyed);
}

/**
 * Resets a server call's HTTP/2 stream (CANCEL): whatever of its reply HTTP/2 still holds is
 * dropped, and grpc-js reports the call cancelled. Returns whether it did: false for a stream
 * already closed.
 */
export function resetStream(call: unknown): boolean {
  const stream = streamOf(call);
  if (!stream || stream.closed) return false;
  stream.close(constants.NGHTTP2_CANCEL);
  return true;
}

/** The status a server call's stream carried to its caller. */
export interface DeliveredStatus {
  code: number;
  details: string;
}

/**
 * Calls `listener` once a server call's HTTP/2 stream has closed, with the status it carried to
 * its caller, or undefined if it was reset, or its connection lost, before its status went out.
 * Returns false, and never calls it, when the call has no stream (grpc-js's privates moved).
 */
export function onStreamClosed(
  call: unknown,
  listener: (delivered: DeliveredStatus | undefined) => void,
): boolean {
  const stream = anyStreamOf(call);
  if (!stream) return false;
  const closed = () => listener(deliveredStatus(stream));
  if (stream.destroyed) queueMicrotask(closed);
  else stream.once("close", closed);
  return true;
}

function deliveredStatus(stream: ServerHttp2Stream): DeliveredStatus | undefined {
  if (stream.rstCode !== constants.NGHTTP2_NO_ERROR) return undefined;
  // The trailers after a reply's messages, or the headers of a reply without any.
  const sent = stream.sentTrailers ?? stream.sentHeaders;
  const code = sent?.["grpc-status"];
  if (code === undefined) return undefined;
  return { code: Number(code), details: percentDecoded(String(sent["grpc-message"] ?? "")) };
}

/** grpc-message as sent, percent-encoded; as is, should it not decode (a listener must not throw). */
function percentDecoded(message: string): string {
  try {
    return decodeURIComponent(message);
  } catch {
    return message;
  }
}
