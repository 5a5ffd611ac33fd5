// The errors the saga reads from its dependencies, and those it answers with of its own.
import type { Order } from "../../gen/ts/shop/order/v1/order.js";
import { type CallContext, deadlinePassed } from "../../kit/context.js";
import { Code, errors, ServiceError, ShuttingDown } from "../../kit/errors.js";

/**
 * A downstream failure as this service reports it: the caller's mistakes (unknown ids, short
 * stock) pass through with their details; an unreachable dependency is UNAVAILABLE. A deadline
 * names the dependency only when this service's own wait ran out, not `ctx`'s caller's.
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
      return new ServiceError(
        Code.DEADLINE_EXCEEDED,
        `the deadline passed while calling the ${dependency} service`,
        { reason: "DEADLINE_EXCEEDED", ...(!callers && { metadata: { dependency } }) },
      );
    }
    default:
      return error;
  }
}

/** The reservation is gone for good: released, expired, or never made. */
export const reservationLost = (error: unknown) =>
  error instanceof ServiceError &&
  (error.details.reason === "RESERVATION_NOT_HELD" ||
    error.details.reason === "RESERVATION_NOT_FOUND");

/** ReserveStock answered that it will not hold this stock: it held nothing (inventory.proto). */
export const refusal = (error: unknown) =>
  error instanceof ServiceError &&
  [
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.FAILED_PRECONDITION,
    Code.ALREADY_EXISTS,
    Code.OUT_OF_RANGE,
  ].includes(error.code);

/**
 * The order's stock was given back before this call could commit it (the saga outran the
 * reservation TTL): the order failed and nothing is held, so the same request may simply be sent
 * again. Not the caller's mistake, hence ABORTED rather than FAILED_PRECONDITION.
 */
export const reservationExpired = (order: Order, cause: unknown) =>
  new ServiceError(
    Code.ABORTED,
    `the stock held for order ${order.orderId} was given back before it could be confirmed; nothing was placed, resend with request_id ${order.requestId}`,
    {
      reason: "RESERVATION_EXPIRED",
      metadata: { order_id: order.orderId, request_id: order.requestId },
    },
    cause,
  );

/** The call ended because its caller went away or ran out of time, not because of the order. */
export const callerGone = (error: unknown) =>
  error instanceof ServiceError &&
  (error.code === Code.CANCELLED || error.code === Code.DEADLINE_EXCEEDED);

export function keyReused(key: string, orderId: string) {
  return errors.alreadyExists(
    "REQUEST_ID_REUSED",
    `request_id ${key} was already used for a different order`,
    { request_id: key, order_id: orderId },
  );
}
