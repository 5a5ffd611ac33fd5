// The saga proper: an order written, its stock taken and committed, then confirmed; and the
// answer of a call that failed once its order was written.
import { setImmediate } from "node:timers/promises";
import type { CreateOrderRequest, Order } from "../../../gen/ts/shop/order/v1/order.js";
import { type Reservation, ReservationState } from "../../../gen/ts/shop/product/v1/inventory.js";
import { fromDependency } from "../../../kit/client/index.js";
import { type CallContext, deadlinePassed } from "../../../kit/context.js";
import { Code, ServiceError } from "../../../kit/errors.js";
import { newId } from "../../../kit/ids.js";
import { enoughOnDisk } from "../../../kit/middleware/durable-answers.js";
import { CONFIRMED, FAILED, PENDING } from "../states.js";
import { IdempotencyKeyTaken } from "../store.js";
import { callerGone, refusal, reservationExpired, reservationLost } from "./errors.js";
import { confirm, failOrder, withdraw } from "./settle.js";
import { type Saga, step } from "./step.js";

const reservationIdOf = (orderId: string) => `order:${orderId}`;

/** Why the product channel was not ready: the caller gone, or product not reachable. */
const notReady = (ctx: CallContext) =>
  ctx.signal.aborted || deadlinePassed(ctx)
    ? new ServiceError(
        deadlinePassed(ctx) ? Code.DEADLINE_EXCEEDED : Code.CANCELLED,
        "the call ended before its order was written",
      )
    : fromDependency(
        "product",
        new ServiceError(Code.UNAVAILABLE, "no connection to the product service"),
        ctx,
      );

/**
 * The saga proper: the order is written first, so that its idempotency key is won before any
 * stock moves and a crash leaves a record the reconciler settles; then its stock is taken and
 * committed in one call; then it is confirmed at the prices its reservation took. Undefined
 * when another call holds the key or failed the order.
 */
export async function place(
  saga: Saga,
  key: string,
  request: CreateOrderRequest,
  ctx: CallContext,
): Promise<Order | undefined> {
  // The user is checked while the order is written. Both come before any stock moves, so an
  // order for an unknown user never holds stock; its PENDING row is deleted like that of any
  // refused order.
  const orderId = newId("ord");
  const [user, write] = await Promise.allSettled([
    step("check_user", () => saga.deps.users.getUser({ userId: request.userId }, { ctx })),
    // SQLite's statements run on this thread, and a request leaves only once the thread is
    // free: the write waits one turn of the event loop, so that GetUser is on the wire first.
    setImmediate().then(async () => {
      // An order written while product cannot be reached would only fail: each resend of the
      // call (Envoy's retries) would leave one more FAILED order under the same key.
      if (!(await saga.deps.inventory.ready({ ctx }))) throw notReady(ctx);
      const written = await step("write", () =>
        saga.store.insert({
          orderId,
          userId: request.userId,
          idempotencyKey: key,
          reservationId: reservationIdOf(orderId),
          lines: request.lines.map(({ productId, quantity }) => ({ productId, quantity })),
        }),
      );
      // Once this row is on disk, with the reservation product syncs before it answers, a
      // crash cannot lose a confirmed order: the reconciler confirms it again from them.
      enoughOnDisk(ctx);
      return written;
    }),
  ]);
  if (user.status === "rejected") {
    // Whose deadline passed is read as the call failed, not after the clean-up.
    const failure = fromDependency("user", user.reason, ctx);
    // The user's answer stands if the order cannot be deleted now: it holds no stock, and the
    // reconciler fails it once its reservation's TTL has passed.
    if (write.status === "fulfilled" && (await saga.store.discard(orderId).catch(() => false))) {
      saga.changed(orderId, FAILED, true);
    }
    throw failure;
  }
  // Another call of this user won the key: the caller settles its order instead.
  if (write.status === "rejected") {
    if (write.reason instanceof IdempotencyKeyTaken) return undefined;
    throw write.reason;
  }
  const written = write.value;

  try {
    return await complete(saga, written, reservationIdOf(orderId), ctx);
  } catch (error) {
    return afterFailure(saga, error, orderId, key, ctx);
  }
}

/**
 * The answer of a call that failed once its order was written. Its error stands when the
 * order can never be confirmed, or when the caller is gone; an order confirmed meanwhile is
 * the answer. One still PENDING may hold its stock and be confirmed by the reconciler, so the
 * caller must not read the failure as "no order" ("the database is busy", "nothing was
 * written", a dependency's timeout), nor resend it without its key (Envoy resends
 * UNAVAILABLE): ORDER_NOT_SETTLED names the order and the key.
 */
export async function afterFailure(
  saga: Saga,
  error: unknown,
  orderId: string,
  key: string,
  ctx: CallContext,
): Promise<Order> {
  // The caller's own deadline or cancel: what it is answered no longer matters to it, and the
  // calls that joined its run (create) settle the order themselves on a caller-gone error,
  // also one that came just before the call's own timer fired.
  if (ctx.signal.aborted || (callerGone(error) && deadlinePassed(ctx))) throw error;
  const stored = await saga.store.find(orderId).then(
    (found) => found ?? "gone",
    () => undefined,
  );
  if (stored === "gone") throw error;
  if (stored?.order.state === CONFIRMED) return stored.order;
  if (stored && stored.order.state !== PENDING) throw error;
  throw new ServiceError(
    Code.ABORTED,
    `order ${orderId} was placed but not yet confirmed; resend with request_id ${key} to settle it, or watch the order`,
    { reason: "ORDER_NOT_SETTLED", metadata: { order_id: orderId, request_id: key } },
    error,
  );
}

/**
 * Takes a written order's stock, committed in the same call, and confirms it; or fails it and
 * gives the stock back. Undefined when another call failed it first.
 */
async function complete(saga: Saga, written: Order, reservationId: string, ctx: CallContext) {
  const { orderId } = written;
  const ttlMs = saga.options.reservationTtlMs;
  let reservation: Reservation | undefined;
  try {
    ({ reservation } = await step("reserve", () =>
      saga.deps.inventory.reserveStock(
        {
          reservationId,
          lines: written.lines.map(({ productId, quantity }) => ({
            productId,
            quantity,
            unitPrice: undefined,
          })),
          commit: true,
          ttl: { seconds: String(Math.floor(ttlMs / 1000)), nanos: (ttlMs % 1000) * 1e6 },
        },
        { ctx },
      ),
    ));
  } catch (error) {
    if (refusal(error)) {
      const failure = fromDependency("product", error, ctx);
      // This attempt held nothing, but one the client resent may still reach product later
      // (its connection dropped, its replica paused): the release leaves a tombstone that
      // refuses it.
      await withdraw(saga, orderId, reservationId);
      throw failure;
    }
    // The stock may have been taken though the reply was lost.
    return abandon(saga, written, reservationId, fromDependency("product", error, ctx));
  }
  switch (reservation?.state) {
    case ReservationState.RESERVATION_STATE_COMMITTED:
      break;
    case ReservationState.RESERVATION_STATE_HELD:
      // A product service older than `commit` only held it (a rolling upgrade).
      try {
        await saga.deps.inventory.commitReservation({ reservationId }, { ctx });
      } catch (error) {
        const cause = reservationLost(error)
          ? reservationExpired(written, error)
          : fromDependency("product", error, ctx);
        return abandon(saga, written, reservationId, cause);
      }
      break;
    default:
      // Released before it was made: a resend or the reconciler failed the order meanwhile,
      // and it never held stock. This call places another; this one was never placed.
      await withdraw(saga, orderId, reservationId);
      return undefined;
  }
  const confirmed = await confirm(saga, written, reservationId, reservation);
  // Failed meanwhile, its stock taken after all: as with the tombstone, this one was never
  // placed, and its stock goes back before this call places another.
  if (!confirmed) await withdraw(saga, orderId, reservationId);
  return confirmed;
}

/**
 * How long a failed CreateOrder waits for its release before it answers: a hung product would
 * hold the answer for another dependency timeout.
 */
const RELEASE_WAIT_MS = 1_000;

/**
 * Fails an order whose stock may or may not be taken, and gives it back; answers `error`,
 * unless a retry on another replica confirmed the order meanwhile.
 */
async function abandon(saga: Saga, written: Order, reservationId: string, error: Error) {
  const { orderId } = written;
  if (await failOrder(saga, orderId, reservationId, RELEASE_WAIT_MS)) throw error;
  const { order } = await saga.store.get(orderId);
  if (order.state === CONFIRMED) return order;
  throw error;
}
