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
 * dropped, and grpc-js reports the call cancelled.
 */
export function resetStream(call: unknown): void {
  const stream = streamOf(call);
  if (stream && !stream.closed) stream.close(constants.NGHTTP2_CANCEL);
}
