// The errors the saga reads from its dependencies, and those it answers with of its own. What a
// dependency's failure becomes in this service's answer is the kit's (fromDependency).
import type { Order } from "../../../gen/ts/shop/order/v1/order.js";
import { Code, errors, ServiceError } from "../../../kit/errors.js";

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
