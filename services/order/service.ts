import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { InventoryServiceService } from "../../gen/ts/shop/product/v1/inventory.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { env } from "../../kit/config.js";
import { signedIn } from "../../kit/security/auth.js";
import { defineService } from "../../kit/service.js";
import { orderHandlers } from "./handlers.js";
import { orderMetrics } from "./metrics.js";
import { migrations } from "./migrations/index.js";
import { OrderSaga } from "./saga/index.js";
import { OrderStore } from "./store.js";
import { OrderWatches } from "./watches.js";

/** The order service's own settings; README "Configuration" documents the variables. */
export interface OrderSettings {
  reservationTtlMs: number;
  reconcileMs: number;
  watchPollMs: number;
}

export const orderSettings = (): OrderSettings => ({
  // Within the ttl ReserveStock takes (inventory.proto): 1 s to 1 h.
  reservationTtlMs: env.int("SHOP_RESERVATION_TTL_MS", 60_000, { min: 1_000, max: 3_600_000 }),
  reconcileMs: env.ms("SHOP_RECONCILE_MS", 5_000, 10),
  watchPollMs: env.ms("SHOP_WATCH_POLL_MS", 1_000, 10),
});

export const createOrderService = (overrides: Partial<OrderSettings> = {}) =>
  defineService({
    name: "order",
    serves: { OrderService: OrderServiceService },
    // Called directly, over one long-lived channel each; the kit retries only what the contract
    // says is safe to repeat (reads, and the reservation calls, idempotent by reservation id).
    dependencies: { users: UserServiceService, inventory: InventoryServiceService },
    migrations,
    settings: ["SHOP_RESERVATION_TTL_MS", "SHOP_RECONCILE_MS", "SHOP_WATCH_POLL_MS"],
    // Every caller signs in; the handlers check that an order is the caller's where they read it.
    access: {
      OrderService: {
        createOrder: signedIn,
        getOrder: signedIn,
        listOrders: signedIn,
        cancelOrder: signedIn,
        watchOrder: signedIn,
      },
    },
    implement: ({ db, reads, logger, clients, dependencyTimeoutMs, metrics }) => {
      const settings = { ...orderSettings(), ...overrides };
      const store = new OrderStore({ db, reads });
      const saga = new OrderSaga(store, clients, {
        reservationTtlMs: settings.reservationTtlMs,
        placingMs: dependencyTimeoutMs,
        logger,
        events: orderMetrics(metrics),
      });
      const reconcile = async () => {
        const count = await saga.reconcile();
        if (count > 0) logger.info({ count }, "settled unfinished orders");
      };
      const watches = new OrderWatches(store, saga.changes, settings.watchPollMs);
      return {
        handlers: { OrderService: orderHandlers(store, saga, watches) },
        background: [{ name: "reconcile", everyMs: settings.reconcileMs, run: reconcile }],
        close: () => watches.close(),
      };
    },
  });

export const orderService = createOrderService();
