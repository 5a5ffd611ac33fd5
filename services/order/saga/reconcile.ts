// The reconciler: settles the orders interrupted sagas and cancels left.

import { CANCELLING, FAILED, PENDING } from "../states.js";
import type { UnsettledOrder } from "../store.js";
import { finishCancel } from "./cancel.js";
import { PLACING, release, settle } from "./settle.js";
import { type Saga, step } from "./step.js";
import type { ReconcileAction, ReconcileResult } from "./types.js";

/**
 * Orders the reconciler settles at once; batches at most in one run, and how long a run starts
 * new ones (a run must end soon after a shutdown asks it to).
 */
const RECONCILE_BATCH = 100;
const RECONCILE_BATCHES = 20;
const RECONCILE_RUN_MS = 5_000;

/**
 * How long a run holds the orders of a batch it took: a minute, and longer than the batch can
 * take, each order's few calls in a row bounded by the dependency timeout, so that no other
 * replica's run settles them meanwhile. A batch gives them back as it ends; one whose process
 * died holds them this long. Replicas' clocks must agree to well within it.
 */
const leaseMs = (saga: Saga) => Math.max(60_000, 4 * saga.options.placingMs);

/**
 * Settles what interrupted sagas and cancels left: releases the reservations of failed
 * orders, finishes recorded cancels, and settles pending orders older than the reservation
 * TTL by their reservation's real state (committed: confirmed; gone: failed). Never fails an
 * order whose reservation was committed. Returns how many orders it settled.
 */
export async function reconcileOrders(saga: Saga, now: number): Promise<number> {
  let settled = 0;
  // A backlog (a product outage under load fails thousands of orders) drains batch after
  // batch in one run, not one batch per interval. Each order is tried once a run, and a batch
  // that settles none of the orders it took, or the run's time running out, ends it.
  const tried: string[] = [];
  const until = Date.now() + RECONCILE_RUN_MS;
  for (let batch = 0; batch < RECONCILE_BATCHES && Date.now() < until; batch++) {
    const pendingBefore = now - saga.options.reservationTtlMs;
    const unsettled = await saga.store.unsettled(pendingBefore, RECONCILE_BATCH, tried);
    const ids = unsettled.map(({ orderId }) => orderId);
    tried.push(...ids);
    // A span only for a batch with work: an idle reconciler would start a trace every interval.
    if (unsettled.length === 0) break;
    // Another replica's run may have read the same orders: each goes to the run that takes it.
    const claimedAt = Date.now();
    const lease = claimedAt + leaseMs(saga);
    const claimed = await saga.store.claimForReconcile(ids, pendingBefore, claimedAt, lease);
    const mine = unsettled.filter(({ orderId }) => claimed.has(orderId));
    const done = mine.length === 0 ? 0 : await settleClaimed(saga, mine, lease);
    settled += done;
    if (unsettled.length < RECONCILE_BATCH || (mine.length > 0 && done === 0)) break;
  }
  return settled;
}

/** Settles the orders this run claimed until `lease`, then lets other runs take them again. */
async function settleClaimed(saga: Saga, orders: UnsettledOrder[], lease: number) {
  try {
    return await step("reconcile", async () => {
      const outcomes = await Promise.all(
        orders.map(async (order) => {
          const { state } = order;
          const action: ReconcileAction =
            state === FAILED ? "release" : state === CANCELLING ? "finish_cancel" : "settle";
          const result = await reconcileOne(saga, order);
          saga.events.reconciled?.(action, result);
          return result;
        }),
      );
      return outcomes.filter((result) => result === "done").length;
    });
  } finally {
    // Failing, the claims lapse with their lease instead.
    await saga.store
      .unclaim(
        orders.map(({ orderId }) => orderId),
        lease,
      )
      .catch(() => {});
  }
}

/** Settles one unsettled order. */
async function reconcileOne(
  saga: Saga,
  { orderId, reservationId, state, withdrawn }: UnsettledOrder,
): Promise<ReconcileResult> {
  try {
    if (state === FAILED) {
      if (!(await release(saga, reservationId))) return "failed";
      if (withdrawn) await saga.store.discard(orderId, FAILED);
      else await saga.store.markReleased(orderId);
      return "done";
    }
    if (state === CANCELLING) {
      await finishCancel(saga, orderId, reservationId);
      return "done";
    }
    const stored = await saga.store.find(orderId);
    if (stored?.order.state !== PENDING) return "skipped";
    const settled = await step("settle", () => settle(saga, stored, {}));
    return settled === PLACING ? "skipped" : "done";
  } catch (error) {
    saga.options.logger.warn({ err: error, orderId }, "could not settle the order; will retry");
    return "failed";
  }
}
