// The HTTP/2 stream under a grpc-js server call, which grpc-js keeps private: a reply nobody reads
// is dropped through it, and a connection that starts closing is watched through its session.
import { constants, type ServerHttp2Stream } from "node:http2";

/** The HTTP/2 stream of a grpc-js server call, live or not; undefined if grpc-js's privates moved. */
function anyStreamOf(call: unknown): ServerHttp2Stream | undefined {
  let link = (call as { call?: unknown }).call;
  for (let depth = 0; link && depth < 8; depth++) {
    const stream = (link as { stream?: ServerHttp2Stream }).stream;
    if (stream) return stream;
    link = (link as { nextCall?: unknown }).nextCall;
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
