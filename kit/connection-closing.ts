// At a connection's max age grpc-js sends GOAWAY, and when the grace period ends it destroys the
// connection with every call still on it: a proxy (Envoy) reports each to its caller as INTERNAL.
// A server stream that never ends by itself (a WatchOrder) would always meet that end, so it ends
// UNAVAILABLE as soon as its connection starts closing, and its caller calls again elsewhere.
// Node closes a session too when the caller sends GOAWAY or the socket drops: the caller is
// leaving then, and its streams end as it chooses (CANCELLED), not UNAVAILABLE.
import type { Http2Session } from "node:http2";
import { streamOf } from "./http2-stream.js";

type Session = Http2Session & { close: (...args: unknown[]) => void };

const ends = new WeakMap<Session, Set<() => void>>();

/** The HTTP/2 session a grpc-js server call runs on; undefined if grpc-js's privates moved. */
const sessionOf = (call: unknown) => streamOf(call)?.session as Session | undefined;

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
