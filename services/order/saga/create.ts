// CreateOrder: one order per user and idempotency key, joined in this process, found or placed
// across replicas.
import {
  type CreateOrderRequest,
  type Order,
  OrderState,
} from "../../../gen/ts/shop/order/v1/order.js";
import type { CallContext } from "../../../kit/context.js";
import { Code, ServiceError } from "../../../kit/errors.js";
import { newId } from "../../../kit/ids.js";
import { enoughOnDisk } from "../../../kit/middleware/durable-answers.js";
import { callerGone, keyReused } from "./errors.js";
import { inflightKey, placing, sameRequest } from "./idempotency.js";
import { afterFailure, place } from "./place.js";
import { PLACING, settle } from "./settle.js";
import { onBehalfOf, type Saga, step } from "./step.js";

/**
 * CreateOrder: one order per user and idempotency key (the request's user_id and
 * request_id), however many retries arrive, on however many replicas. Another user's key is
 * another key. Resolves only with a CONFIRMED order. `inflight` holds this process's runs, by
 * inflightKey.
 */
export async function createOrder(
  saga: Saga,
  inflight: Map<string, Promise<Order>>,
  request: CreateOrderRequest,
  ctx: CallContext,
): Promise<Order> {
  const key = request.requestId || newId("req");
  const claim = inflightKey(request, key);
  for (let attempt = 0; ; attempt++) {
    // Registered before the first await, so a retry arriving at any moment joins this run.
    let run = inflight.get(claim);
    const joined = run !== undefined;
    if (!run) {
      run = resolve(onBehalfOf(saga, ctx), key, request, ctx).finally(() => inflight.delete(claim));
      inflight.set(claim, run);
    }
    let order: Order;
    try {
      order = await run;
    } catch (error) {
      // The run this call joined ended with its own caller's deadline: this call settles the
      // body itself.
      if (joined && callerGone(error) && !ctx.signal.aborted && attempt < 3) continue;
      throw error;
    }
    if (!sameRequest(order, request)) throw keyReused(key, order.orderId);
    if (joined) saga.events.replayed?.();
    return order;
  }
}

/** Finds the user's order of an idempotency key and settles it, or places it. */
async function resolve(saga: Saga, key: string, request: CreateOrderRequest, ctx: CallContext) {
  for (let attempt = 0, waits = 0; attempt < 3; ) {
    const existing = await saga.store.findByIdempotencyKey(request.userId, key);
    if (!existing) {
      const placed = await place(saga, key, request, ctx);
      if (placed) return placed;
      attempt++;
      continue;
    }
    if (!sameRequest(existing.order, request)) {
      // Another body's order: the key is taken for good unless that order is still being
      // placed, and fails. Not an attempt.
      if (existing.order.state !== OrderState.ORDER_STATE_PENDING) {
        throw keyReused(key, existing.order.orderId);
      }
      await placing(waits++, ctx);
      continue;
    }
    const settled = await step("settle", () => settle(saga, existing, { ctx })).catch(
      (error: unknown) => afterFailure(saga, error, existing.order.orderId, key, ctx),
    );
    if (settled === PLACING) {
      // Another replica's call is placing it: its answer will be ours. Not an attempt.
      await placing(waits++, ctx);
      continue;
    }
    if (settled) {
      // An order another call wrote, maybe after this call's own early sync began (its
      // place() failed): the answer waits for a sync that covers that order too.
      enoughOnDisk(ctx);
      saga.events.replayed?.();
      return settled;
    }
    // It failed: its key is free again, and this call places a new order.
    attempt++;
  }
  throw new ServiceError(
    Code.ABORTED,
    `other calls with request_id ${key} are placing the order at the same time; retry`,
    { reason: "REQUEST_IN_PROGRESS", metadata: { request_id: key } },
  );
}
