import { EventEmitter } from "node:events";
import {
  type CreateOrderRequest,
  type Order,
  OrderState,
} from "../../gen/ts/shop/order/v1/order.js";
import type { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import type { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import type { Client } from "../../kit/client.js";
import type { CallContext } from "../../kit/context.js";
import { Code, errors, ServiceError } from "../../kit/errors.js";
import { newId } from "../../kit/ids.js";
import type { Logger } from "../../kit/logger.js";
import { type OrderStore, RequestIdTaken } from "./store.js";

/** The services an order depends on, reached directly through typed clients. */
export interface Dependencies {
  users: Client<typeof UserServiceService>;
  products: Client<typeof ProductServiceService>;
}

export interface SagaOptions {
  /** How long stock stays held before an uncommitted reservation expires. */
  reservationTtlMs: number;
  logger: Logger;
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

/** The order flow (docs/architecture.md): idempotent create, compensation, cancel, reconciliation. */
export class OrderSaga {
  /** Emits an event named after the order id whenever this process changes its state. */
  readonly changes = new EventEmitter().setMaxListeners(0);
  private readonly inflight = new Map<string, Promise<Order>>();

  constructor(
    private readonly store: OrderStore,
    private readonly deps: Dependencies,
    private readonly options: SagaOptions,
  ) {}

  /** CreateOrder: one order per idempotency key (request_id), however many retries arrive. */
  async create(request: CreateOrderRequest, ctx: CallContext): Promise<Order> {
    const requestId = request.requestId || newId("req");
    // Registered before the first await, so a retry arriving at any moment joins this run.
    let run = this.inflight.get(requestId);
    if (!run) {
      run = this.findOrPlace(requestId, request, ctx).finally(() =>
        this.inflight.delete(requestId),
      );
      this.inflight.set(requestId, run);
    }
    const order = await run;
    if (!sameRequest(order, request)) {
      throw errors.alreadyExists(
        "REQUEST_ID_REUSED",
        `request_id ${requestId} was already used for a different order`,
        { request_id: requestId, order_id: order.orderId },
      );
    }
    return order;
  }

  private async findOrPlace(requestId: string, request: CreateOrderRequest, ctx: CallContext) {
    return (await this.store.findByRequestId(requestId)) ?? this.place(requestId, request, ctx);
  }

  private async place(requestId: string, request: CreateOrderRequest, ctx: CallContext) {
    const { users, products } = this.deps;
    await users.getUser({ userId: request.userId }, { ctx }).catch((error) => {
      throw fromDependency("user", error);
    });

    const orderId = newId("ord");
    const reservationId = reservationIdOf(orderId);
    const ttlMs = this.options.reservationTtlMs;
    const { reservation } = await products
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
      });

    let order: Order;
    try {
      const lines = (reservation?.lines ?? []).map((line) => ({
        productId: line.productId,
        quantity: line.quantity,
        unitPriceMinor: BigInt(line.unitPrice?.amountMinor ?? "0"),
        currencyCode: line.unitPrice?.currencyCode ?? "",
      }));
      const currencies = new Set(lines.map((line) => line.currencyCode));
      if (currencies.size !== 1) {
        throw errors.failedPrecondition(
          "CURRENCY_MISMATCH",
          `the products are priced in different currencies: ${[...currencies].join(", ")}`,
        );
      }
      order = await this.store.insert({
        orderId,
        userId: request.userId,
        requestId,
        reservationId,
        currencyCode: lines[0]?.currencyCode ?? "",
        totalMinor: lines.reduce(
          (sum, line) => sum + line.unitPriceMinor * BigInt(line.quantity),
          0n,
        ),
        lines,
      });
    } catch (error) {
      await this.release(reservationId);
      if (error instanceof RequestIdTaken) {
        // A concurrent attempt on another replica won the race: its order is the answer.
        const winner = await this.store.findByRequestId(requestId);
        if (winner) return winner;
      }
      throw error;
    }

    try {
      await products.commitReservation({ reservationId }, { ctx });
    } catch (error) {
      await this.store.fail(orderId);
      this.changes.emit(orderId);
      if (await this.release(reservationId)) await this.store.markReleased(orderId);
      throw fromDependency("product", error);
    }
    await this.store.transition(
      orderId,
      [OrderState.ORDER_STATE_PENDING],
      OrderState.ORDER_STATE_CONFIRMED,
    );
    this.changes.emit(orderId);
    return { ...order, state: OrderState.ORDER_STATE_CONFIRMED };
  }

  /**
   * Best-effort compensation, on its own deadline: the caller's may already have passed. A
   * failure here is covered by the reservation's TTL and by reconcile().
   */
  private async release(reservationId: string): Promise<boolean> {
    try {
      await this.deps.products.releaseReservation({ reservationId }, { timeoutMs: 2_000 });
      return true;
    } catch (error) {
      this.options.logger.warn({ err: error, reservationId }, "release failed; TTL will expire it");
      return false;
    }
  }

  /** CancelOrder: give the stock back, then mark the order cancelled. */
  async cancel(orderId: string, ctx: CallContext): Promise<Order> {
    const { order, reservationId } = await this.store.get(orderId);
    if (order.state === OrderState.ORDER_STATE_CANCELLED) return order;
    if (order.state !== OrderState.ORDER_STATE_CONFIRMED) {
      throw errors.failedPrecondition(
        "ORDER_NOT_CANCELLABLE",
        `order ${orderId} is ${OrderState[order.state]}; only confirmed orders can be cancelled`,
        { metadata: { order_id: orderId } },
      );
    }
    await this.deps.products.releaseReservation({ reservationId }, { ctx }).catch((error) => {
      throw fromDependency("product", error);
    });
    await this.store.transition(
      orderId,
      [OrderState.ORDER_STATE_CONFIRMED],
      OrderState.ORDER_STATE_CANCELLED,
    );
    await this.store.markReleased(orderId);
    this.changes.emit(orderId);
    return (await this.store.get(orderId)).order;
  }

  /**
   * Releases what failed sagas could not: failed orders whose release did not go through, and
   * pending orders whose process died before committing (older than the reservation TTL, so no
   * live saga still owns them). Returns how many it settled.
   */
  async reconcile(now = Date.now()): Promise<number> {
    const stale = await this.store.needingRelease(now - this.options.reservationTtlMs - 5_000);
    let settled = 0;
    for (const { orderId, reservationId, state } of stale) {
      if (!(await this.release(reservationId))) continue;
      if (state === OrderState.ORDER_STATE_PENDING) {
        await this.store.fail(orderId);
        this.changes.emit(orderId);
      }
      await this.store.markReleased(orderId);
      settled++;
    }
    return settled;
  }
}
