// A server stream that never ends by itself (a WatchOrder, a health Watch) ends with UNAVAILABLE
// before grpc-js would cut it, which Envoy reports to its caller as INTERNAL.
import type * as grpc from "@grpc/grpc-js";
import { Code, ServiceError, ShuttingDown } from "../errors.js";
import { onConnectionClosing } from "./connection-closing.js";

const connectionClosing = () =>
  new ServiceError(Code.UNAVAILABLE, "this connection is closing; call again on a new one", {
    reason: "CONNECTION_CLOSING",
  });

/** The server streams open on a server, and whether it is shutting down (it ends them then). */
export interface OpenStreams {
  /** How to end each stream at the end of a shutdown's grace period. */
  readonly ends: Set<() => void>;
  readonly stopping: () => boolean;
}

/**
 * Ends a server stream with UNAVAILABLE, which its caller or Envoy calls again elsewhere, before
 * grpc-js would cut it: as its connection starts to close (CONNECTION_CLOSING), or as a
 * shutdown's grace period ends (SHUTTING_DOWN). Returns what stops watching, for a stream that
 * ended first.
 */
export function endBeforeCut(
  call: grpc.ServerWritableStream<unknown, unknown>,
  open: OpenStreams,
  endWith: (error: ServiceError) => void,
): () => void {
  const end = () => endWith(new ShuttingDown());
  open.ends.add(end);
  const unwatch = onConnectionClosing(call, () => endWith(connectionClosing()), open.stopping);
  return () => {
    open.ends.delete(end);
    unwatch();
  };
}
