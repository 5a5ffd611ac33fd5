// What every step of the saga works with, and the span it runs in.
import type { OrderState } from "../../../gen/ts/shop/order/v1/order.js";
import type { CallContext, CallOptions } from "../../../kit/context.js";
import { outliving } from "../../../kit/middleware/index.js";
import { inSpan } from "../../../kit/observability/tracing.js";
import type { OrderStore } from "../store.js";
import type { Dependencies, SagaEvents, SagaOptions } from "./types.js";

/** One OrderSaga's parts, which its create, cancel and reconcile paths share. */
export interface Saga {
  store: OrderStore;
  deps: Dependencies;
  options: SagaOptions;
  events: SagaEvents;
  /**
   * This process moved an order to `state`: watchers and the events hear of it. `withdrawn`: its
   * CreateOrder withdrew it, so that no order was placed.
   */
  changed(orderId: string, state: OrderState, withdrawn?: boolean): void;
  /** The served call this run of the saga is for; background work (the reconciler) has none. */
  servedCall?: CallContext;
}

/** The saga as one served call runs it (Saga.servedCall). */
export const onBehalfOf = (saga: Saga, ctx: CallContext): Saga => ({ ...saga, servedCall: ctx });

/**
 * How a compensating call (a release) is made: as part of the served call it undoes, by its
 * x-request-id, but never cut by that call's deadline (outliving).
 */
export const compensating = (saga: Saga): CallOptions =>
  saga.servedCall ? outliving(saga.servedCall) : {};

/** A step of the saga, as a span of its own: `saga.<name>` (docs/architecture.md). */
export const step = <T>(name: string, work: () => Promise<T>) => inSpan(`saga.${name}`, work);
