// Bringing a written order to its end: settled by its reservation's state, confirmed at the
// reservation's prices, or failed and its stock given back.
import { setTimeout as sleep } from "node:timers/promises";
import type { Order } from "../../../gen/ts/shop/order/v1/order.js";
import type { Reservation } from "../../../gen/ts/shop/product/v1/inventory.js";
import { fromDependency } from "../../../kit/client/index.js";
import type { CallOptions } from "../../../kit/context.js";
import { Code, errors, ServiceError } from "../../../kit/errors.js";
import { CANCELLED, CANCELLING, CONFIRMED, FAILED, PENDING } from "../states.js";
import type { Prices, StoredOrder } from "../store.js";
import { reservationLost } from "./errors.js";
import { pricedOrder, pricesOf } from "./prices.js";
import { compensating, type Saga, step } from "./step.js";

/** settle() found the order's own call still reserving its stock. */
export const PLACING = Symbol("placing");

/**
 * Brings an order another call wrote to its end: a confirmed order is the answer; a pending one
 * (its saga still running on another replica, or dead) is confirmed here when its stock was
 * taken, or failed when it never will be. Undefined when it ended FAILED; PLACING while the
 * call that wrote it may still be taking its stock.
 */
export async function settle(
  saga: Saga,
  { order, reservationId }: StoredOrder,
  call: CallOptions,
): Promise<Order | undefined | typeof PLACING> {
  switch (order.state) {
    case CONFIRMED:
      return order;
    case CANCELLING:
    case CANCELLED:
      throw errors.failedPrecondition(
        "ORDER_CANCELLED",
        `the order placed under request_id ${order.requestId} was cancelled`,
        { metadata: { order_id: order.orderId, request_id: order.requestId } },
      );
    case PENDING:
      break;
    default:
      return undefined;
  }
  // Commits a reservation an older version only held; returns a committed one as it stands.
  let reservation: Reservation | undefined;
  try {
    ({ reservation } = await saga.deps.inventory.commitReservation({ reservationId }, call));
  } catch (error) {
    if (!reservationLost(error)) throw fromDependency("product", error, call.ctx);
    const notYet = error instanceof ServiceError && error.code === Code.NOT_FOUND;
    const age = Date.now() - (order.createTime?.getTime() ?? 0);
    // The call that wrote it may yet send ReserveStock after this (its GetUser, begun beside
    // the write, may take the dependency timeout): its ReserveStock then meets the release's
    // tombstone, and that call withdraws the order (complete).
    if (notYet && age < saga.options.placingMs) return PLACING;
    // Never made (its call is over; a late ReserveStock finds it released) or given back.
    await failOrder(saga, order.orderId, reservationId);
    return undefined;
  }
  return confirm(saga, order, reservationId, reservation);
}

/**
 * PENDING → CONFIRMED at the reservation's prices; the order as it then stands, if it is
 * confirmed. `order` is the order as read or written: when this call confirms it, nothing else
 * can have changed it meanwhile, so it is the answer without reading it back.
 */
export async function confirm(
  saga: Saga,
  order: Order,
  reservationId: string,
  reservation: Reservation | undefined,
): Promise<Order | undefined> {
  const { orderId } = order;
  let prices: Prices;
  try {
    prices = pricesOf(reservation);
  } catch (error) {
    // The stock is taken but the order cannot stand.
    await withdraw(saga, orderId, reservationId);
    throw error;
  }
  const now = Date.now();
  if (await step("confirm", () => saga.store.confirm(orderId, prices, now))) {
    saga.changed(orderId, CONFIRMED);
    return pricedOrder(order, prices, new Date(now));
  }
  const { order: stored } = await saga.store.get(orderId);
  return stored.state === CONFIRMED ? stored : undefined;
}

/**
 * PENDING → FAILED, then the reservation back; only the call that failed it releases. With
 * `waitMs`, it returns once the release is done or that long has passed, whichever is first:
 * the release goes on, and the reconciler repeats one that fails.
 */
export async function failOrder(
  saga: Saga,
  orderId: string,
  reservationId: string,
  waitMs?: number,
): Promise<boolean> {
  if (!(await saga.store.fail(orderId))) return false;
  saga.changed(orderId, FAILED);
  const released = release(saga, reservationId)
    .then(async (done) => {
      if (done) await saga.store.markReleased(orderId);
    })
    .catch((error: unknown) =>
      saga.options.logger.warn({ err: error, orderId }, "could not mark the order released"),
    );
  if (waitMs === undefined) await released;
  // Unref'd: the timer left after an early release must not hold a stopping process.
  else await Promise.race([released, sleep(waitMs, undefined, { ref: false })]);
  return true;
}

/**
 * An order that cannot stand: failed and withdrawn (no read shows it), its reservation
 * released (whatever it holds, or a tombstone), then deleted, so that no order was placed.
 * Should the release fail, the reconciler releases and deletes it.
 */
export async function withdraw(saga: Saga, orderId: string, reservationId: string): Promise<void> {
  try {
    if (await saga.store.fail(orderId, true)) saga.changed(orderId, FAILED, true);
    // Failed meanwhile by another call (a resend that found it not yet reserving): this
    // call's refusal says no order was placed all the same.
    else if (!(await saga.store.withdrawFailed(orderId))) return;
    if (await release(saga, reservationId)) await saga.store.discard(orderId, FAILED);
  } catch (error) {
    // The caller's answer is the refusal: an order left PENDING or FAILED here is the
    // reconciler's to settle.
    saga.options.logger.warn({ err: error, orderId }, "could not withdraw the order; will retry");
  }
}

/**
 * Best-effort compensation, on its own deadline: the caller's may already have passed. A
 * failure here is covered by the reservation's TTL and by the reconciler.
 */
export async function release(saga: Saga, reservationId: string): Promise<boolean> {
  try {
    // Failing inside the step, so that its span says so.
    await step("release", () =>
      saga.deps.inventory.releaseReservation({ reservationId }, compensating(saga)),
    );
    return true;
  } catch (error) {
    saga.options.logger.warn({ err: error, reservationId }, "release failed; will retry");
    return false;
  }
}
