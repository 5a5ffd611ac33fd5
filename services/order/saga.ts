import { EventEmitter } from "node:events";
import {
  type CreateOrderRequest,
  type Order,
  OrderState,
} from "../../gen/ts/shop/order/v1/order.js";
import type { InventoryServiceService } from "../../gen/ts/shop/product/v1/inventory.js";
import type { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import type { CallOptions, Client } from "../../kit/client.js";
import type { CallContext } from "../../kit/context.js";
import { Code, errors, ServiceError } from "../../kit/errors.js";
import { newId } from "../../kit/ids.js";
import type { Logger } from "../../kit/logger.js";
import { toServiceError } from "../../kit/middleware/status.js";
import { totalOf } from "../../kit/money.js";
import { inSpan } from "../../kit/tracing.js";
import { IdempotencyKeyTaken, type OrderStore, type StoredOrder } from "./store.js";

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
  /** How long stock stays held before an uncommitted reservation expires. */
  reservationTtlMs: number;
  /**
   * Deadline of the calls that finish work on the service's own behalf (releases, cancels); the
   * clients' default deadline (SHOP_DEPENDENCY_TIMEOUT_MS) when unset.
   */
  settleTimeoutMs?: number;
  logger: Logger;
  events?: SagaEvents;
}

/**
 * A downstream failure as this service reports it: the caller's mistakes (unknown ids, short
 * stock) pass through with their details; an unreachable dependency is UNAVAILABLE.
 */
function fromDependency(dependency: string, error: unknown): Error {
  if (!(error instanceof ServiceError)) return error as Error;
  switch (error.code) {
    case Code.UNAVAILABLE:
      return new ServiceError(Code.UNAVAILABLE, `the ${dependency} service is unavailable`, {
        reason: "DEPENDENCY_UNAVAILABLE",
        metadata: { dependency, cause: error.message },
      });
    case Code.DEADLINE_EXCEEDED:
      return new ServiceError(
        Code.DEADLINE_EXCEEDED,
        `the deadline passed while calling the ${dependency} service`,
        { reason: "DEADLINE_EXCEEDED", metadata: { dependency } },
      );
    default:
      return error;
  }
}

const sameRequest = (order: Order, request: CreateOrderRequest) =>
  order.userId === request.userId &&
  order.lines.length === request.lines.length &&
  order.lines.every(
    (line, i) =>
      line.productId === request.lines[i]?.productId &&
      line.quantity === request.lines[i]?.quantity,
  );

const reservationIdOf = (orderId: string) => `order:${orderId}`;

/** The reservation is gone for good: released, expired, or never made. */
const reservationLost = (error: unknown) =>
  error instanceof ServiceError &&
  (error.details.reason === "RESERVATION_NOT_HELD" ||
    error.details.reason === "RESERVATION_NOT_FOUND");

/**
 * The order's stock was given back before this call could commit it (the saga outran the
 * reservation TTL): the order failed and nothing is held, so the same request may simply be sent
 * again. Not the caller's mistake, hence ABORTED rather than FAILED_PRECONDITION.
 */
const reservationExpired = (order: Order, cause: unknown) =>
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
const callerGone = (error: unknown) =>
  error instanceof ServiceError &&
  (error.code === Code.CANCELLED || error.code === Code.DEADLINE_EXCEEDED);

/** A step of the saga, as a span of its own: `saga.<name>` (docs/architecture.md). */
const step = <T>(name: string, work: () => Promise<T>) => inSpan(`saga.${name}`, work);

const { PENDING, CONFIRMED, CANCELLING, CANCELLED, FAILED } = {
  PENDING: OrderState.ORDER_STATE_PENDING,
  CONFIRMED: OrderState.ORDER_STATE_CONFIRMED,
  CANCELLING: OrderState.ORDER_STATE_CANCELLING,
  CANCELLED: OrderState.ORDER_STATE_CANCELLED,
  FAILED: OrderState.ORDER_STATE_FAILED,
};

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
   * CreateOrder: one order per idempotency key (the request's request_id), however many
   * retries arrive, on however many replicas. Resolves only with a CONFIRMED order.
   */
  async create(request: CreateOrderRequest, ctx: CallContext): Promise<Order> {
    const key = request.requestId || newId("req");
    for (let attempt = 0; ; attempt++) {
      // Registered before the first await, so a retry arriving at any moment joins this run.
      let run = this.inflight.get(key);
      const joined = run !== undefined;
      if (!run) {
        run = this.resolve(key, request, ctx).finally(() => this.inflight.delete(key));
        this.inflight.set(key, run);
      }
      try {
        const order = await run;
        if (!sameRequest(order, request)) throw keyReused(key, order.orderId);
        if (joined) this.events.replayed?.();
        return order;
      } catch (error) {
        // The run this call joined ended with its own caller's deadline; this caller may still
        // have time to finish the order itself.
        if (joined && callerGone(error) && !ctx.signal.aborted && attempt < 3) continue;
        throw error;
      }
    }
  }

  /** Finds the order of an idempotency key and settles it, or places it. */
  private async resolve(key: string, request: CreateOrderRequest, ctx: CallContext) {
    for (let attempt = 0; attempt < 3; attempt++) {
      const existing = await this.store.findByIdempotencyKey(key);
      if (!existing) {
        const placed = await this.place(key, request, ctx);
        if (placed) return placed;
        continue;
      }
      if (!sameRequest(existing.order, request)) throw keyReused(key, existing.order.orderId);
      const settled = await step("settle", () => this.settle(existing, { ctx }));
      if (settled) {
        this.events.replayed?.();
        return settled;
      }
      // It failed: its key is free again, and this call places a new order.
    }
    throw new ServiceError(
      Code.ABORTED,
      `other calls with request_id ${key} are placing the order at the same time; retry`,
      { reason: "REQUEST_IN_PROGRESS", metadata: { request_id: key } },
    );
  }

  /**
   * Brings an order another call wrote to its end: a confirmed order is the answer; a pending one
   * (its saga still running on another replica, or dead) is committed and confirmed here, or
   * failed when its reservation is gone. Undefined when it ended FAILED.
   */
  private async settle({ order, reservationId }: StoredOrder, call: CallOptions) {
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
    try {
      await this.deps.inventory.commitReservation({ reservationId }, call);
    } catch (error) {
      if (!reservationLost(error)) throw fromDependency("product", error);
      await this.failOrder(order.orderId, reservationId);
      return undefined;
    }
    return this.confirm(order.orderId);
  }

  /**
   * PENDING → CONFIRMED after a commit; the order as it then stands, if it is confirmed. `written`
   * is the order as this call wrote it: when this call confirms it, nothing else can have changed
   * it meanwhile, so it is the answer without reading the order back.
   */
  private async confirm(orderId: string, written?: Order): Promise<Order | undefined> {
    const now = Date.now();
    if (await this.store.transition(orderId, [PENDING], CONFIRMED, now)) {
      this.changed(orderId, CONFIRMED);
      if (written) return { ...written, state: CONFIRMED, updateTime: new Date(now) };
    }
    const { order } = await this.store.get(orderId);
    return order.state === CONFIRMED ? order : undefined;
  }

  /** PENDING → FAILED, then the reservation back; only the call that failed it releases. */
  private async failOrder(orderId: string, reservationId: string): Promise<boolean> {
    if (!(await this.store.fail(orderId))) return false;
    this.changed(orderId, FAILED);
    if (await this.release(reservationId)) await this.store.markReleased(orderId);
    return true;
  }

  /** The saga proper; undefined when another call holds the key or failed the order. */
  private async place(
    key: string,
    request: CreateOrderRequest,
    ctx: CallContext,
  ): Promise<Order | undefined> {
    const { users, inventory } = this.deps;
    // The user first, so that an order for an unknown user never holds stock, not even for a
    // moment (checking both at once was measured: see bench/README.md).
    await step("check_user", () =>
      users.getUser({ userId: request.userId }, { ctx }).catch((error) => {
        throw fromDependency("user", error);
      }),
    );

    const orderId = newId("ord");
    const reservationId = reservationIdOf(orderId);
    const ttlMs = this.options.reservationTtlMs;
    const { reservation } = await step("reserve", () =>
      inventory
        .reserveStock(
          {
            reservationId,
            lines: request.lines.map(({ productId, quantity }) => ({
              productId,
              quantity,
              unitPrice: undefined,
            })),
            ttl: { seconds: String(Math.floor(ttlMs / 1000)), nanos: (ttlMs % 1000) * 1e6 },
          },
          { ctx },
        )
        .catch(async (error) => {
          // The reservation may have been made even though the reply was lost.
          if (!(error instanceof ServiceError) || error.code !== Code.FAILED_PRECONDITION) {
            await this.release(reservationId);
          }
          throw fromDependency("product", error);
        }),
    );

    let written: Order;
    try {
      const lines = (reservation?.lines ?? []).map((line) => {
        if (!line.unitPrice) throw new Error(`no price for ${line.productId} in ${reservationId}`);
        return {
          productId: line.productId,
          quantity: line.quantity,
          unitPriceMinor: BigInt(line.unitPrice.amountMinor),
          currencyCode: line.unitPrice.currencyCode,
        };
      });
      const currencies = new Set(lines.map((line) => line.currencyCode));
      if (currencies.size !== 1) {
        throw errors.failedPrecondition(
          "CURRENCY_MISMATCH",
          `the products are priced in different currencies: ${[...currencies].join(", ")}`,
        );
      }
      const currencyCode = lines[0]?.currencyCode ?? "";
      written = await step("write", () =>
        this.store.insert({
          orderId,
          userId: request.userId,
          idempotencyKey: key,
          reservationId,
          currencyCode,
          totalMinor: totalOf(currencyCode, lines),
          lines,
        }),
      );
    } catch (error) {
      await this.release(reservationId);
      // Another call won the key: the caller settles its order instead.
      if (error instanceof IdempotencyKeyTaken) return undefined;
      throw error;
    }

    try {
      return await step("commit", () => this.complete(written, reservationId, ctx));
    } catch (error) {
      // Envoy retries any rpc that answers UNAVAILABLE (docs/architecture.md). Without the
      // caller's own key (request_id) a retry places another order, so UNAVAILABLE (an
      // unreachable product service, a database busy past its timeout) stands only once this
      // order can never be confirmed.
      if (request.requestId || toServiceError(error, ctx).code !== Code.UNAVAILABLE) throw error;
      const stored = await this.store.find(orderId).catch(() => undefined);
      if (stored?.order.state === CONFIRMED) return stored.order;
      if (stored?.order.state === FAILED) throw error;
      throw new ServiceError(
        Code.ABORTED,
        `order ${orderId} was placed but not yet confirmed; resend with request_id ${key} to settle it, or watch the order`,
        { reason: "ORDER_NOT_SETTLED", metadata: { order_id: orderId, request_id: key } },
        error,
      );
    }
  }

  /** Commits a written order's reservation and confirms it, or fails the order. */
  private async complete(written: Order, reservationId: string, ctx: CallContext) {
    const { orderId } = written;
    try {
      await this.deps.inventory.commitReservation({ reservationId }, { ctx });
    } catch (error) {
      // Unless a retry on another replica has confirmed it meanwhile, the order fails here.
      if (!(await this.failOrder(orderId, reservationId))) {
        const order = (await this.store.get(orderId)).order;
        if (order.state === CONFIRMED) return order;
      }
      if (reservationLost(error)) throw reservationExpired(written, error);
      throw fromDependency("product", error);
    }
    return this.confirm(orderId, written);
  }

  /**
   * Best-effort compensation, on its own deadline: the caller's may already have passed. A
   * failure here is covered by the reservation's TTL and by reconcile().
   */
  private release(reservationId: string): Promise<boolean> {
    return step("release", async () => {
      try {
        await this.deps.inventory.releaseReservation(
          { reservationId },
          { timeoutMs: this.options.settleTimeoutMs },
        );
        return true;
      } catch (error) {
        this.options.logger.warn({ err: error, reservationId }, "release failed; will retry");
        return false;
      }
    });
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
      if (moved) this.changes.emit(orderId);
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
      await this.deps.inventory
        .releaseReservation({ reservationId }, { timeoutMs: this.options.settleTimeoutMs })
        .catch((error) => {
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
    const unsettled = await this.store.unsettled(now - this.options.reservationTtlMs);
    // A span only for a run with work: an idle reconciler would start a trace every interval.
    if (unsettled.length === 0) return 0;
    return step("reconcile", async () => {
      const outcomes = await Promise.all(
        unsettled.map(async ({ orderId, reservationId, state }) => {
          const action: ReconcileAction =
            state === FAILED ? "release" : state === CANCELLING ? "finish_cancel" : "settle";
          const result = await this.reconcileOne(orderId, reservationId, state);
          this.events.reconciled?.(action, result);
          return result;
        }),
      );
      return outcomes.filter((result) => result === "done").length;
    });
  }

  /** Settles one unsettled order. */
  private async reconcileOne(
    orderId: string,
    reservationId: string,
    state: OrderState,
  ): Promise<ReconcileResult> {
    try {
      if (state === FAILED) {
        if (!(await this.release(reservationId))) return "failed";
        await this.store.markReleased(orderId);
        return "done";
      }
      if (state === CANCELLING) {
        await this.finishCancel(orderId, reservationId);
        return "done";
      }
      const stored = await this.store.find(orderId);
      if (stored?.order.state !== PENDING) return "skipped";
      await step("settle", () => this.settle(stored, { timeoutMs: this.options.settleTimeoutMs }));
      return "done";
    } catch (error) {
      this.options.logger.warn({ err: error, orderId }, "could not settle the order; will retry");
      return "failed";
    }
  }
}

function keyReused(key: string, orderId: string) {
  return errors.alreadyExists(
    "REQUEST_ID_REUSED",
    `request_id ${key} was already used for a different order`,
    { request_id: key, order_id: orderId },
  );
}
