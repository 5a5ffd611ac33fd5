import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import type { Metrics } from "../../kit/observability/metrics.js";
import type { SagaEvents } from "./saga/index.js";

const OUTCOMES: Partial<Record<OrderState, string>> = {
  [OrderState.ORDER_STATE_CONFIRMED]: "confirmed",
  [OrderState.ORDER_STATE_FAILED]: "failed",
  [OrderState.ORDER_STATE_CANCELLED]: "cancelled",
};

/** An order written and then withdrawn by its CreateOrder: no order was placed, none failed. */
const WITHDRAWN = "withdrawn";

/**
 * The order flow's business metrics, as the saga reports it: `shop_orders_total{outcome}` (an
 * order this process confirmed, failed, cancelled or withdrawn), `shop_order_replays_total` (CreateOrder
 * answered with the order its request_id had placed) and
 * `shop_reconciler_actions_total{action,result}`.
 */
export function orderMetrics(metrics: Metrics): SagaEvents {
  const orders = metrics.counter({
    name: "shop_orders_total",
    help: "Orders this process settled, by outcome: confirmed, failed or cancelled; withdrawn: written, then withdrawn by its CreateOrder (refused for stock, say), so no order was placed.",
    labelNames: ["outcome"],
  });
  const replays = metrics.counter({
    name: "shop_order_replays_total",
    help: "CreateOrder calls answered with the order their request_id had already placed.",
  });
  const actions = metrics.counter({
    name: "shop_reconciler_actions_total",
    help: "What the reconciler did for an unsettled order (release, finish_cancel, settle), by result (done, failed, skipped).",
    labelNames: ["action", "result"],
  });
  // Every series present from the start, so rates and alerts are defined before the first event.
  for (const outcome of [...Object.values(OUTCOMES), WITHDRAWN]) orders.inc({ outcome }, 0);
  for (const action of ["release", "finish_cancel", "settle"]) {
    for (const result of ["done", "failed", "skipped"]) actions.inc({ action, result }, 0);
  }
  return {
    stateChanged(state, withdrawn) {
      const outcome = withdrawn ? WITHDRAWN : OUTCOMES[state];
      if (outcome) orders.inc({ outcome });
    },
    replayed: () => replays.inc(),
    reconciled: (action, result) => actions.inc({ action, result }),
  };
}
