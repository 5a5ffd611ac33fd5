// The order saga (docs/architecture.md): OrderSaga puts together its paths, one file each.
import { EventEmitter } from "node:events";
import type { CreateOrderRequest, Order } from "../../../gen/ts/shop/order/v1/order.js";
import type { CallContext } from "../../../kit/context.js";
import type { OrderStore } from "../store.js";
import { cancelOrder } from "./cancel.js";
import { createOrder } from "./create.js";
import { reconcileOrders } from "./reconcile.js";
import { onBehalfOf, type Saga } from "./step.js";
import type { Dependencies, SagaOptions } from "./types.js";

export type {
  Dependencies,
  ReconcileAction,
  ReconcileResult,
  SagaEvents,
  SagaOptions,
} from "./types.js";

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

  private readonly saga: Saga;

  constructor(store: OrderStore, deps: Dependencies, options: SagaOptions) {
    const events = options.events ?? {};
    this.saga = {
      store,
      deps,
      options,
      events,
      changed: (orderId, state, withdrawn) => {
        this.changes.emit(orderId);
        events.stateChanged?.(state, withdrawn);
      },
    };
  }

  /** CreateOrder (create.ts). Resolves only with a CONFIRMED order. */
  create(request: CreateOrderRequest, ctx: CallContext): Promise<Order> {
    return createOrder(this.saga, this.inflight, request, ctx);
  }

  /** CancelOrder (cancel.ts). */
  cancel(orderId: string, ctx: CallContext): Promise<Order> {
    return cancelOrder(onBehalfOf(this.saga, ctx), orderId);
  }

  /** Settles what interrupted sagas and cancels left (reconcile.ts); how many it settled. */
  reconcile(now = Date.now()): Promise<number> {
    return reconcileOrders(this.saga, now);
  }
}
