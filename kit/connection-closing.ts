// At a connection's max age grpc-js sends GOAWAY, and when the grace period ends it destroys the
// connection with every call still on it: a proxy (Envoy) reports each to its caller as INTERNAL.
// A server stream that never ends by itself (a WatchOrder) would always meet that end, so it ends
// UNAVAILABLE as soon as its connection starts closing, and its caller calls again elsewhere.
// Node closes a session too when the caller sends GOAWAY or the socket drops: the caller is
// leaving then, and its streams end as it chooses (CANCELLED), not UNAVAILABLE.
import { constants, type Http2Session, type ServerHttp2Stream } from "node:http2";

type Session = Http2Session & { close: (...args: unknown[]) => void };

const ends = new WeakMap<Session, Set<() => void>>();

/** The HTTP/2 stream of a grpc-js server call; undefined if grpc-js's privates moved. */
function streamOf(call: unknown): ServerHttp2Stream | undefined {
  let link = (call as { call?: unknown }).call;
  for (let depth = 0; link && depth < 8; depth++) {
    const stream = (link as { stream?: ServerHttp2Stream }).stream;
    if (stream?.session) return stream;
    link = (link as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

const sessionOf = (call: unknown) => streamOf(call)?.session as Session | undefined;

/**
 * Resets a server call's HTTP/2 stream (CANCEL): whatever of its reply HTTP/2 still holds is
 * dropped, and grpc-js reports the call cancelled.
 */
export function resetStream(call: unknown): void {
  const stream = streamOf(call);
  if (stream && !stream.closed) stream.close(constants.NGHTTP2_CANCEL);
}

/**
 * Runs `end` once the connection `call` runs on starts to close (grpc-js closes it gracefully at
 * its max age and at a shutdown), unless `ignore()` says the server ends its streams itself then.
 * Returns what stops watching, for a call that ended first.
 */
export function onConnectionClosing(
  call: unknown,
  end: () => void,
  ignore: () => boolean,
): () => void {
  const session = sessionOf(call);
  if (!session || typeof session.close !== "function") return () => {};
  let waiting = ends.get(session);
  if (!waiting) {
    const streams = new Set<() => void>();
    waiting = streams;
    ends.set(session, streams);
    let callerLeft = false;
    session.once("goaway", () => {
      callerLeft = true;
    });
    const close = session.close;
    session.close = (...args: unknown[]) => {
      const byServer = !callerLeft && session.socket?.destroyed === false;
      if (byServer && !ignore()) for (const ending of [...streams]) ending();
      streams.clear();
      return close.apply(session, args);
    };
  }
  const set = waiting;
  set.add(end);
  return () => set.delete(end);
}
