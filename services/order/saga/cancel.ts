// CancelOrder: the intent recorded, the stock given back, the order CANCELLED.
import { type Order, OrderState } from "../../../gen/ts/shop/order/v1/order.js";
import { fromDependency } from "../../../kit/client/index.js";
import { errors } from "../../../kit/errors.js";
import { CANCELLED, CANCELLING, CONFIRMED } from "../states.js";
import { compensating, type Saga, step } from "./step.js";

/**
 * CancelOrder: record the intent (CANCELLING), give the stock back, mark it CANCELLED. Once
 * recorded, the cancel runs on the service's own deadline, not the caller's: a caller that
 * goes away does not leave it half done, and the reconciler finishes one a crash interrupted.
 */
export async function cancelOrder(saga: Saga, orderId: string): Promise<Order> {
  let { order, reservationId } = await saga.store.get(orderId);
  if (order.state === CONFIRMED) {
    const moved = await step("record_cancel", () =>
      saga.store.transition(orderId, [CONFIRMED], CANCELLING),
    );
    if (moved) saga.changed(orderId, CANCELLING);
    ({ order, reservationId } = await saga.store.get(orderId));
  }
  if (order.state === CANCELLED) return order;
  if (order.state !== CANCELLING) {
    throw errors.failedPrecondition(
      "ORDER_NOT_CANCELLABLE",
      `order ${orderId} is ${OrderState[order.state]}; only confirmed orders can be cancelled`,
      { metadata: { order_id: orderId } },
    );
  }
  await finishCancel(saga, orderId, reservationId);
  return (await saga.store.get(orderId)).order;
}

export function finishCancel(saga: Saga, orderId: string, reservationId: string): Promise<void> {
  return step("finish_cancel", async () => {
    await saga.deps.inventory
      .releaseReservation({ reservationId }, compensating(saga))
      .catch((error) => {
        throw fromDependency("product", error);
      });
    if (await saga.store.finishCancel(orderId)) saga.changed(orderId, CANCELLED);
  });
}
