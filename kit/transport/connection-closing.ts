// At a connection's max age grpc-js sends GOAWAY, and when the grace period ends it destroys the
// connection with every call still on it: a proxy (Envoy) reports each to its caller as INTERNAL.
// A server stream that never ends by itself (a WatchOrder) would always meet that end, so it ends
// UNAVAILABLE as soon as its connection starts closing, and its caller calls again elsewhere.
// Node closes a session too when the caller sends GOAWAY or the socket drops: the caller is
// leaving then, and its streams end as it chooses (CANCELLED), not UNAVAILABLE.
import type { Http2Session } from "node:http2";
import { streamOf } from "./http2-stream.js";

type Session = Http2Session & { close: (...args: unknown[]) => void };

/** Per session: the streams to end as it closes, and whether the server has closed it. */
interface Closing {
  /** Each stream's end, and whether to leave it to the server's shutdown then. */
  streams: Map<() => void, () => boolean>;
  byServer: boolean;
}

const closings = new WeakMap<Session, Closing>();

/** A served call that can learn that the server cut its connection under it. */
export interface CuttableCall {
  cutByServer(): void;
}

/** The served calls running on each session, for a shutdown to tell which it cut. */
const running = new WeakMap<Http2Session, Set<CuttableCall>>();

/** Notes `call` as running on `session`; returns what notes its end. */
export function trackCall(session: Http2Session, call: CuttableCall): () => void {
  let calls = running.get(session);
  if (!calls) {
    calls = new Set();
    running.set(session, calls);
  }
  calls.add(call);
  return () => calls.delete(call);
}

/** Tells every call still running on `session` that the server is cutting it (a shutdown's end). */
export function markCut(session: Http2Session): void {
  for (const call of running.get(session) ?? []) call.cutByServer();
}

/**
 * Whether the server closed `session` (grpc-js, at its max age or a shutdown) and it is gone: the
 * calls still on it were cut off by the server, not left by their callers.
 */
export function closedByServer(session: Http2Session): boolean {
  return session.destroyed && closings.get(session as Session)?.byServer === true;
}

/** The HTTP/2 session a grpc-js server call runs on; undefined if grpc-js's privates moved. */
const sessionOf = (call: unknown) => streamOf(call)?.session as Session | undefined;

/**
 * Starts watching who closes `session`, once: the server (grpc-js, at the connection's max age or
 * a shutdown), or the caller (its GOAWAY, or the socket dropping). ServerSessions does it at a
 * connection's first call, before any of its streams can start late.
 */
export function watchClosing(session: Http2Session): void {
  closingOf(session as Session);
}

function closingOf(session: Session): Closing {
  const known = closings.get(session);
  if (known) return known;
  const state: Closing = { streams: new Map(), byServer: false };
  closings.set(session, state);
  let callerLeft = false;
  session.once("goaway", () => {
    callerLeft = true;
  });
  const close = session.close;
  session.close = (...args: unknown[]) => {
    // Node closes the session again when the caller answers the server's GOAWAY with its own:
    // the first close tells who closed it.
    if (!state.byServer && !callerLeft && session.socket?.destroyed === false) {
      state.byServer = true;
      for (const [end, ignore] of [...state.streams]) if (!ignore()) end();
    }
    state.streams.clear();
    return close.apply(session, args);
  };
  return state;
}

/**
 * Runs `end` once the connection `call` runs on starts to close (grpc-js closes it gracefully at
 * its max age and at a shutdown), unless `ignore()` says the server ends its streams itself then.
 * A call that starts on a connection the server already closes (its request arrived after the
 * GOAWAY) ends at once. Returns what stops watching, for a call that ended first.
 */
export function onConnectionClosing(
  call: unknown,
  end: () => void,
  ignore: () => boolean,
): () => void {
  const session = sessionOf(call);
  if (!session || typeof session.close !== "function") return () => {};
  const closing = closingOf(session);
  if (closing.byServer) return endSoon(end, ignore);
  closing.streams.set(end, ignore);
  return () => closing.streams.delete(end);
}

/** Runs `end` in a microtask, unless `ignore()` then or the call ends first. */
function endSoon(end: () => void, ignore: () => boolean): () => void {
  let watching = true;
  queueMicrotask(() => {
    if (watching && !ignore()) end();
  });
  return () => {
    watching = false;
  };
}
