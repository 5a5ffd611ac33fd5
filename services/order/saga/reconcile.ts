// The reconciler: settles the orders interrupted sagas and cancels left.
import type { UnsettledOrder } from "../store.js";
import { finishCancel } from "./cancel.js";
import { PLACING, release, settle } from "./settle.js";
import { CANCELLING, FAILED, PENDING, type Saga, step } from "./step.js";
import type { ReconcileAction, ReconcileResult } from "./types.js";

/**
 * Orders the reconciler settles at once; batches at most in one run, and how long a run starts
 * new ones (a run must end soon after a shutdown asks it to).
 */
const RECONCILE_BATCH = 100;
const RECONCILE_BATCHES = 20;
const RECONCILE_RUN_MS = 5_000;

/**
 * How long a run holds the orders it took: longer than a batch takes, with its calls' deadlines,
 * so that no other replica's run settles them meanwhile. A run that ends gives them back at once;
 * one whose process died holds them this long.
 */
const RECONCILE_LEASE_MS = 60_000;

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
    const unsettled = await saga.store.unsettled(
      now - saga.options.reservationTtlMs,
      RECONCILE_BATCH,
      tried,
    );
    const ids = unsettled.map(({ orderId }) => orderId);
    tried.push(...ids);
    // A span only for a batch with work: an idle reconciler would start a trace every interval.
    if (unsettled.length === 0) break;
    // Another replica's run may have read the same orders: each goes to the run that takes it.
    const claimed = await saga.store.claimForReconcile(
      ids,
      Date.now(),
      Date.now() + RECONCILE_LEASE_MS,
    );
    const mine = unsettled.filter(({ orderId }) => claimed.has(orderId));
    const done = mine.length === 0 ? 0 : await settleClaimed(saga, mine);
    settled += done;
    if (unsettled.length < RECONCILE_BATCH || (mine.length > 0 && done === 0)) break;
  }
  return settled;
}

/** Settles the orders this run claimed, then lets other runs take those still unsettled. */
async function settleClaimed(saga: Saga, orders: UnsettledOrder[]): Promise<number> {
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
    await saga.store.unclaim(orders.map(({ orderId }) => orderId)).catch(() => {});
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
