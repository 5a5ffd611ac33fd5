// The saga's public types: what it depends on, its options, and the events it reports.
import type { OrderState } from "../../../gen/ts/shop/order/v1/order.js";
import type { InventoryServiceService } from "../../../gen/ts/shop/product/v1/inventory.js";
import type { UserServiceService } from "../../../gen/ts/shop/user/v1/user.js";
import type { Client } from "../../../kit/client/index.js";
import type { Logger } from "../../../kit/observability/logger.js";

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
  /**
   * This process moved an order to `state`; `withdrawn` when its CreateOrder withdrew it (refused
   * for stock, say): no order was placed.
   */
  stateChanged?(state: OrderState, withdrawn?: boolean): void;
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
