import { EventEmitter } from "node:events";
import { setImmediate, setTimeout as sleep } from "node:timers/promises";
import {
  type CreateOrderRequest,
  type Order,
  OrderState,
} from "../../gen/ts/shop/order/v1/order.js";
import {
  type InventoryServiceService,
  type Reservation,
  ReservationState,
} from "../../gen/ts/shop/product/v1/inventory.js";
import type { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { type Client, fromDependency } from "../../kit/client.js";
import { type CallContext, type CallOptions, deadlinePassed } from "../../kit/context.js";
import { Code, errors, ServiceError } from "../../kit/errors.js";
import { newId } from "../../kit/ids.js";
import { enoughOnDisk } from "../../kit/middleware/durable-answers.js";
import type { Logger } from "../../kit/observability/logger.js";
import { inSpan } from "../../kit/observability/tracing.js";
import { pricedOrder, pricesOf } from "./prices.js";
import {
  callerGone,
  keyReused,
  refusal,
  reservationExpired,
  reservationLost,
} from "./saga-errors.js";
import { IdempotencyKeyTaken, type OrderStore, type Prices, type StoredOrder } from "./store.js";

/** The services an order depends on, reached directly through typed clients. */
export interface Dependencies {
  users: Client<typeof UserServiceService>;
  inventory: Client<typeof InventoryServiceService>;
}

/** What the reconciler does for one unsettled order. */
export type ReconcileAction = "release" | "finish_cancel" | "settle";

/** How it went: done, failed (left for the next run), or skipped (another call settled it). */
export type ReconcileResult = "done" | "failed" | "skipped";

/**
 * What the saga tells about the orders it moves, as it happens; the service counts them
 * (business metrics). Every hook is optional.
 */
export interface SagaEvents {
  /** This process moved an order to `state`. */
  stateChanged?(state: OrderState): void;
  /** CreateOrder answered with the order its request_id had already placed. */
  replayed?(): void;
  /** The reconciler acted on an unsettled order. */
  reconciled?(action: ReconcileAction, result: ReconcileResult): void;
}

export interface SagaOptions {
  /**
   * How long stock stays held before an uncommitted reservation expires, and how old a PENDING
   * order must be before the reconciler settles it.
   */
  reservationTtlMs: number;
  /**
   * How long the call that wrote an order may still be reserving its stock: the deadline of its
   * call to the product service (the clients' default). A retry that finds the order younger
   * waits for that call rather than failing the order under it.
   */
  placingMs: number;
  logger: Logger;
  events?: SagaEvents;
}

const { PENDING, CONFIRMED, CANCELLING, CANCELLED, FAILED } = {
  PENDING: OrderState.ORDER_STATE_PENDING,
  CONFIRMED: OrderState.ORDER_STATE_CONFIRMED,
  CANCELLING: OrderState.ORDER_STATE_CANCELLING,
  CANCELLED: OrderState.ORDER_STATE_CANCELLED,
  FAILED: OrderState.ORDER_STATE_FAILED,
};

/**
 * The order a request asks for: the same user, products and quantities, its lines in any order
 * (a client may build them from a map). Each product is on one line at most, in both.
 */
const sameRequest = (order: Order, request: CreateOrderRequest) =>
  order.userId === request.userId &&
  order.lines.length === request.lines.length &&
  order.lines.every((line, i) => {
    const asked = request.lines[i];
    if (asked?.productId === line.productId) return asked.quantity === line.quantity;
    return request.lines.some(
      (other) => other.productId === line.productId && other.quantity === line.quantity,
    );
  });

const reservationIdOf = (orderId: string) => `order:${orderId}`;

/**
 * Orders the reconciler settles at once; batches at most in one run, and how long a run starts
 * new ones (a run must end soon after a shutdown asks it to).
 */
const RECONCILE_BATCH = 100;
const RECONCILE_BATCHES = 20;
const RECONCILE_RUN_MS = 5_000;

/** settle() found the order's own call still reserving its stock. */
const PLACING = Symbol("placing");

/** A step of the saga, as a span of its own: `saga.<name>` (docs/architecture.md). */
const step = <T>(name: string, work: () => Promise<T>) => inSpan(`saga.${name}`, work);

/**
 * The order flow (docs/architecture.md): idempotent create, compensation, cancel,
 * reconciliation. Every state change is a conditional UPDATE from the state it expects, so
 * replicas, retries and the reconciler can race on one order and exactly one of them moves it.
 * Whoever moves an order to FAILED gives its reservation back; an order is CONFIRMED only after
 * its reservation is committed.
 */
export class OrderSaga {
  /** Emits an event named after the order id whenever this process changes its state. */
  readonly changes = new EventEmitter().setMaxListeners(0);
  /** CreateOrder's runs in this process, by inflightKey. */
  private readonly inflight = new Map<string, Promise<Order>>();

  private readonly events: SagaEvents;

  constructor(
    private readonly store: OrderStore,
    private readonly deps: Dependencies,
    private readonly options: SagaOptions,
  ) {
    this.events = options.events ?? {};
  }

  /** This process moved an order to `state`: watchers and the events hear of it. */
  private changed(orderId: string, state: OrderState) {
    this.changes.emit(orderId);
    this.events.stateChanged?.(state);
  }

  /**
   * CreateOrder: one order per user and idempotency key (the request's user_id and
   * request_id), however many retries arrive, on however many replicas. Another user's key is
   * another key. Resolves only with a CONFIRMED order.
   */
  async create(request: CreateOrderRequest, ctx: CallContext): Promise<Order> {
    const key = request.requestId || newId("req");
    const claim = inflightKey(request, key);
    for (let attempt = 0; ; attempt++) {
      // Registered before the first await, so a retry arriving at any moment joins this run.
      let run = this.inflight.get(claim);
      const joined = run !== undefined;
      if (!run) {
        run = this.resolve(key, request, ctx).finally(() => this.inflight.delete(claim));
        this.inflight.set(claim, run);
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
      if (joined) this.events.replayed?.();
      return order;
    }
  }

  /** Finds the user's order of an idempotency key and settles it, or places it. */
  private async resolve(key: string, request: CreateOrderRequest, ctx: CallContext) {
    for (let attempt = 0, waits = 0; attempt < 3; ) {
      const existing = await this.store.findByIdempotencyKey(request.userId, key);
      if (!existing) {
        const placed = await this.place(key, request, ctx);
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
      const settled = await step("settle", () => this.settle(existing, { ctx })).catch(
        (error: unknown) => this.afterFailure(error, existing.order.orderId, key, ctx),
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
        this.events.replayed?.();
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

  /**
   * Brings an order another call wrote to its end: a confirmed order is the answer; a pending one
   * (its saga still running on another replica, or dead) is confirmed here when its stock was
   * taken, or failed when it never will be. Undefined when it ended FAILED; PLACING while the
   * call that wrote it may still be taking its stock.
   */
  private async settle(
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
      ({ reservation } = await this.deps.inventory.commitReservation({ reservationId }, call));
    } catch (error) {
      if (!reservationLost(error)) throw fromDependency("product", error, call.ctx);
      const notYet = error instanceof ServiceError && error.code === Code.NOT_FOUND;
      const age = Date.now() - (order.createTime?.getTime() ?? 0);
      // The call that wrote it may yet send ReserveStock after this (its GetUser, begun beside
      // the write, may take the dependency timeout): its ReserveStock then meets the release's
      // tombstone, and that call withdraws the order (complete).
      if (notYet && age < this.options.placingMs) return PLACING;
      // Never made (its call is over; a late ReserveStock finds it released) or given back.
      await this.failOrder(order.orderId, reservationId);
      return undefined;
    }
    return this.confirm(order, reservationId, reservation);
  }

  /**
   * PENDING → CONFIRMED at the reservation's prices; the order as it then stands, if it is
   * confirmed. `order` is the order as read or written: when this call confirms it, nothing else
   * can have changed it meanwhile, so it is the answer without reading it back.
   */
  private async confirm(
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
      await this.withdraw(orderId, reservationId);
      throw error;
    }
    const now = Date.now();
    if (await step("confirm", () => this.store.confirm(orderId, prices, now))) {
      this.changed(orderId, CONFIRMED);
      return pricedOrder(order, prices, new Date(now));
    }
    const { order: stored } = await this.store.get(orderId);
    return stored.state === CONFIRMED ? stored : undefined;
  }

  /** PENDING → FAILED, then the reservation back; only the call that failed it releases. */
  private async failOrder(orderId: string, reservationId: string): Promise<boolean> {
    if (!(await this.store.fail(orderId))) return false;
    this.changed(orderId, FAILED);
    if (await this.release(reservationId)) await this.store.markReleased(orderId);
    return true;
  }

  /**
   * The saga proper: the order is written first, so that its idempotency key is won before any
   * stock moves and a crash leaves a record the reconciler settles; then its stock is taken and
   * committed in one call; then it is confirmed at the prices its reservation took. Undefined
   * when another call holds the key or failed the order.
   */
  private async place(
    key: string,
    request: CreateOrderRequest,
    ctx: CallContext,
  ): Promise<Order | undefined> {
    // The user is checked while the order is written. Both come before any stock moves, so an
    // order for an unknown user never holds stock; its PENDING row is deleted like that of any
    // refused order.
    const orderId = newId("ord");
    const [user, write] = await Promise.allSettled([
      step("check_user", () => this.deps.users.getUser({ userId: request.userId }, { ctx })),
      // SQLite's statements run on this thread, and a request leaves only once the thread is
      // free: the write waits one turn of the event loop, so that GetUser is on the wire first.
      setImmediate().then(async () => {
        const written = await step("write", () =>
          this.store.insert({
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
      if (write.status === "fulfilled") await this.store.discard(orderId);
      throw failure;
    }
    // Another call of this user won the key: the caller settles its order instead.
    if (write.status === "rejected") {
      if (write.reason instanceof IdempotencyKeyTaken) return undefined;
      throw write.reason;
    }
    const written = write.value;

    try {
      return await this.complete(written, reservationIdOf(orderId), ctx);
    } catch (error) {
      return this.afterFailure(error, orderId, key, ctx);
    }
  }

  /**
   * An order that cannot stand: failed and withdrawn (no read shows it), its reservation
   * released (whatever it holds, or a tombstone), then deleted, so that no order was placed.
   * Should the release fail, the reconciler releases and deletes it.
   */
  private async withdraw(orderId: string, reservationId: string): Promise<void> {
    try {
      if (await this.store.fail(orderId, true)) this.changed(orderId, FAILED);
      // Failed meanwhile by another call (a resend that found it not yet reserving): this
      // call's refusal says no order was placed all the same.
      else if (!(await this.store.withdrawFailed(orderId))) return;
      if (await this.release(reservationId)) await this.store.discard(orderId, FAILED);
    } catch (error) {
      // The caller's answer is the refusal: an order left PENDING or FAILED here is the
      // reconciler's to settle.
      this.options.logger.warn({ err: error, orderId }, "could not withdraw the order; will retry");
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
  private async afterFailure(
    error: unknown,
    orderId: string,
    key: string,
    ctx: CallContext,
  ): Promise<Order> {
    // The caller's own deadline or cancel: what it is answered no longer matters to it, and the
    // calls that joined its run (create) settle the order themselves on a caller-gone error,
    // also one that came just before the call's own timer fired.
    if (ctx.signal.aborted || (callerGone(error) && deadlinePassed(ctx))) throw error;
    const stored = await this.store.find(orderId).then(
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
  private async complete(written: Order, reservationId: string, ctx: CallContext) {
    const { orderId } = written;
    const ttlMs = this.options.reservationTtlMs;
    let reservation: Reservation | undefined;
    try {
      ({ reservation } = await step("reserve", () =>
        this.deps.inventory.reserveStock(
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
        await this.withdraw(orderId, reservationId);
        throw failure;
      }
      // The stock may have been taken though the reply was lost.
      return this.abandon(written, reservationId, fromDependency("product", error, ctx));
    }
    switch (reservation?.state) {
      case ReservationState.RESERVATION_STATE_COMMITTED:
        break;
      case ReservationState.RESERVATION_STATE_HELD:
        // A product service older than `commit` only held it (a rolling upgrade).
        try {
          await this.deps.inventory.commitReservation({ reservationId }, { ctx });
        } catch (error) {
          const cause = reservationLost(error)
            ? reservationExpired(written, error)
            : fromDependency("product", error, ctx);
          return this.abandon(written, reservationId, cause);
        }
        break;
      default:
        // Released before it was made: a resend or the reconciler failed the order meanwhile,
        // and it never held stock. This call places another; this one was never placed.
        await this.withdraw(orderId, reservationId);
        return undefined;
    }
    const confirmed = await this.confirm(written, reservationId, reservation);
    // Failed meanwhile, its stock taken after all: as with the tombstone, this one was never
    // placed, and its stock goes back before this call places another.
    if (!confirmed) await this.withdraw(orderId, reservationId);
    return confirmed;
  }

  /**
   * Fails an order whose stock may or may not be taken, and gives it back; answers `error`,
   * unless a retry on another replica confirmed the order meanwhile.
   */
  private async abandon(written: Order, reservationId: string, error: Error) {
    const { orderId } = written;
    if (await this.failOrder(orderId, reservationId)) throw error;
    const { order } = await this.store.get(orderId);
    if (order.state === CONFIRMED) return order;
    throw error;
  }

  /**
   * Best-effort compensation, on its own deadline: the caller's may already have passed. A
   * failure here is covered by the reservation's TTL and by reconcile().
   */
  private async release(reservationId: string): Promise<boolean> {
    try {
      // Failing inside the step, so that its span says so.
      await step("release", () => this.deps.inventory.releaseReservation({ reservationId }));
      return true;
    } catch (error) {
      this.options.logger.warn({ err: error, reservationId }, "release failed; will retry");
      return false;
    }
  }

  /**
   * CancelOrder: record the intent (CANCELLING), give the stock back, mark it CANCELLED. Once
   * recorded, the cancel runs on the service's own deadline, not the caller's: a caller that
   * goes away does not leave it half done, and reconcile() finishes one a crash interrupted.
   */
  async cancel(orderId: string): Promise<Order> {
    let { order, reservationId } = await this.store.get(orderId);
    if (order.state === CONFIRMED) {
      const moved = await step("record_cancel", () =>
        this.store.transition(orderId, [CONFIRMED], CANCELLING),
      );
      if (moved) this.changed(orderId, CANCELLING);
      ({ order, reservationId } = await this.store.get(orderId));
    }
    if (order.state === CANCELLED) return order;
    if (order.state !== CANCELLING) {
      throw errors.failedPrecondition(
        "ORDER_NOT_CANCELLABLE",
        `order ${orderId} is ${OrderState[order.state]}; only confirmed orders can be cancelled`,
        { metadata: { order_id: orderId } },
      );
    }
    await this.finishCancel(orderId, reservationId);
    return (await this.store.get(orderId)).order;
  }

  private finishCancel(orderId: string, reservationId: string): Promise<void> {
    return step("finish_cancel", async () => {
      await this.deps.inventory.releaseReservation({ reservationId }).catch((error) => {
        throw fromDependency("product", error);
      });
      if (await this.store.finishCancel(orderId)) this.changed(orderId, CANCELLED);
    });
  }

  /**
   * Settles what interrupted sagas and cancels left: releases the reservations of failed
   * orders, finishes recorded cancels, and settles pending orders older than the reservation
   * TTL by their reservation's real state (committed: confirmed; gone: failed). Never fails an
   * order whose reservation was committed. Returns how many orders it settled.
   */
  async reconcile(now = Date.now()): Promise<number> {
    let settled = 0;
    // A backlog (a product outage under load fails thousands of orders) drains batch after
    // batch in one run, not one batch per interval. Each order is tried once a run, and a batch
    // that settles nothing, or the run's time running out, ends it.
    const tried: string[] = [];
    const until = Date.now() + RECONCILE_RUN_MS;
    for (let batch = 0; batch < RECONCILE_BATCHES && Date.now() < until; batch++) {
      const unsettled = await this.store.unsettled(
        now - this.options.reservationTtlMs,
        RECONCILE_BATCH,
        tried,
      );
      tried.push(...unsettled.map(({ orderId }) => orderId));
      // A span only for a batch with work: an idle reconciler would start a trace every interval.
      if (unsettled.length === 0) break;
      const done = await step("reconcile", async () => {
        const outcomes = await Promise.all(
          unsettled.map(async (order) => {
            const { state } = order;
            const action: ReconcileAction =
              state === FAILED ? "release" : state === CANCELLING ? "finish_cancel" : "settle";
            const result = await this.reconcileOne(order);
            this.events.reconciled?.(action, result);
            return result;
          }),
        );
        return outcomes.filter((result) => result === "done").length;
      });
      settled += done;
      if (unsettled.length < RECONCILE_BATCH || done === 0) break;
    }
    return settled;
  }

  /** Settles one unsettled order. */
  private async reconcileOne({
    orderId,
    reservationId,
    state,
    withdrawn,
  }: {
    orderId: string;
    reservationId: string;
    state: OrderState;
    withdrawn: boolean;
  }): Promise<ReconcileResult> {
    try {
      if (state === FAILED) {
        if (!(await this.release(reservationId))) return "failed";
        if (withdrawn) await this.store.discard(orderId, FAILED);
        else await this.store.markReleased(orderId);
        return "done";
      }
      if (state === CANCELLING) {
        await this.finishCancel(orderId, reservationId);
        return "done";
      }
      const stored = await this.store.find(orderId);
      if (stored?.order.state !== PENDING) return "skipped";
      const settled = await step("settle", () => this.settle(stored, {}));
      return settled === PLACING ? "skipped" : "done";
    } catch (error) {
      this.options.logger.warn({ err: error, orderId }, "could not settle the order; will retry");
      return "failed";
    }
  }
}

/** Waits a little longer each time (20 ms up to 200) while another call places an order. */
const placing = (waits: number, ctx: CallContext) =>
  sleep(Math.min(20 * 2 ** waits, 200), undefined, { signal: ctx.signal }).catch(() => {
    throw new ServiceError(Code.CANCELLED, "the call ended while its order was placed");
  });

/**
 * Where the in-flight runs are kept. An idempotency key is its user's, so the user is part of
 * it; and a run in this process is joined only by calls asking for the same order (sameRequest):
 * another body's run may fail for what that body asked, or place what this call did not ask for.
 */
const inflightKey = (request: CreateOrderRequest, key: string) =>
  JSON.stringify([
    request.userId,
    key,
    request.lines.map((line) => [line.productId, line.quantity]).sort(),
  ]);
