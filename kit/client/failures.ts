import * as grpc from "@grpc/grpc-js";
import { type CallContext, deadlinePassed } from "../context.js";
import { Code, fromGrpcError, ServiceError, ShuttingDown } from "../errors.js";
import type { OutgoingCall } from "./call.js";

/**
 * A reply cut short by the death of the replica that had begun it: behind Envoy, which cannot
 * retry a reply it has started to send and resets the stream (grpc-js: INTERNAL "Received
 * RST_STREAM with code …", which no server sends), or directly, when the connection drops
 * (UNAVAILABLE "Connection dropped"). The service config's retries never see either, because a
 * call is committed once its reply's headers arrive, so the client sends an rpc it may repeat
 * once more itself.
 */
export function cutShort(error: grpc.ServiceError): boolean {
  return (
    (error.code === grpc.status.INTERNAL &&
      error.details.startsWith("Received RST_STREAM with code ") &&
      !error.details.includes("triggered by internal client error")) ||
    (error.code === grpc.status.UNAVAILABLE && error.details === "Connection dropped")
  );
}

/**
 * CANCELLED that this side never asked for: the server reset the call, as grpc-js does to the
 * calls still running when a shutdown's grace period ends. To the caller that is a server gone
 * away, like a dropped connection, and not its own cancel, which callers and Envoy never retry.
 */
export function cancelledByServer(error: grpc.ServiceError, call: OutgoingCall): boolean {
  return error.code === grpc.status.CANCELLED && !call.signals.some((signal) => signal.aborted);
}

/** A failed call's error as the caller gets it. */
export function failureOf(error: grpc.ServiceError, call: OutgoingCall): ServiceError {
  // Cancelled by a signal that says why in a ServiceError (a shutdown's grace period ending).
  const why = call.signals.find(
    (signal) => signal.aborted && signal.reason instanceof ServiceError,
  );
  if (error.code === grpc.status.CANCELLED && why) return why.reason as ServiceError;
  if (!cancelledByServer(error, call)) return fromGrpcError(error);
  return new ServiceError(Code.UNAVAILABLE, `the server ended the call: ${error.details}`);
}

/**
 * A downstream failure as this service reports it: the caller's mistakes (unknown ids, short
 * stock) pass through with their details; an unreachable dependency is UNAVAILABLE. A deadline
 * names the dependency only when this service's own wait ran out, not `ctx`'s caller's.
 * `dependency` is the service called, as the answer names it ("product").
 */
export function fromDependency(dependency: string, error: unknown, ctx?: CallContext): Error {
  if (!(error instanceof ServiceError)) return error as Error;
  // This service's own shutdown cut the call: that is the answer, not the dependency.
  if (error instanceof ShuttingDown) return error;
  switch (error.code) {
    // A dependency that does not serve the call (an older build, in a rolling upgrade) is this
    // service's trouble, not an rpc its caller called wrong.
    case Code.UNIMPLEMENTED:
    case Code.UNAVAILABLE:
      // What grpc-js said (the addresses it dialled) goes to the log only.
      return new ServiceError(
        Code.UNAVAILABLE,
        `the ${dependency} service is unavailable`,
        { reason: "DEPENDENCY_UNAVAILABLE", metadata: { dependency } },
        error,
      );
    case Code.DEADLINE_EXCEEDED: {
      const callers = ctx !== undefined && deadlinePassed(ctx);
      // Past this service's own bound for the call, the dependency's slowness is this
      // service's trouble: its cause goes to the log, at warn. The caller's own deadline is not.
      return new ServiceError(
        Code.DEADLINE_EXCEEDED,
        `the deadline passed while calling the ${dependency} service`,
        { reason: "DEADLINE_EXCEEDED", ...(!callers && { metadata: { dependency } }) },
        callers ? undefined : error,
      );
    }
    default:
      return error;
  }
}
