import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { createClient } from "../../kit/client.js";
import { env } from "../../kit/config.js";
import type { ServiceModule } from "../../kit/main.js";
import { repeat } from "../../kit/repeat.js";
import { orderHandlers } from "./handlers.js";
import { migrations } from "./migrations/index.js";
import { OrderSaga } from "./saga.js";
import { OrderStore } from "./store.js";

/** The order service's own settings; README "Configuration" documents the variables. */
export interface OrderSettings {
  /** The user service: host:port, a comma-separated list of IP replicas, or a DNS name. */
  userAddr: string;
  /** The product service, in the same forms. */
  productAddr: string;
  /** Deadline of a downstream call when the caller set a later one or none. */
  dependencyTimeoutMs: number;
  reservationTtlMs: number;
  reconcileMs: number;
  watchPollMs: number;
}

export const orderSettings = (): OrderSettings => ({
  userAddr: env.string("SHOP_USER_ADDR", "127.0.0.1:50051"),
  productAddr: env.string("SHOP_PRODUCT_ADDR", "127.0.0.1:50052"),
  dependencyTimeoutMs: env.int("SHOP_DEPENDENCY_TIMEOUT_MS", 5_000),
  reservationTtlMs: env.int("SHOP_RESERVATION_TTL_MS", 60_000),
  reconcileMs: env.int("SHOP_RECONCILE_MS", 5_000),
  watchPollMs: env.int("SHOP_WATCH_POLL_MS", 1_000),
});

export const createOrderService = (overrides: Partial<OrderSettings> = {}): ServiceModule => ({
  name: "order",
  defaultPort: 50053,
  migrations,
  implement: (db, logger) => {
    const settings = { ...orderSettings(), ...overrides };
    const defaultTimeoutMs = settings.dependencyTimeoutMs;
    // One long-lived channel per dependency. Retries, and the wait for a channel to be ready,
    // cover only methods that are safe to repeat: reads, and the reservation calls, which are
    // idempotent by reservation id.
    const users = createClient(UserServiceService, settings.userAddr, {
      serviceName: "shop.user.v1.UserService",
      idempotentMethods: ["GetUser", "ListUsers"],
      defaultTimeoutMs,
    });
    const products = createClient(ProductServiceService, settings.productAddr, {
      serviceName: "shop.product.v1.ProductService",
      idempotentMethods: [
        "GetProduct",
        "ListProducts",
        "ReserveStock",
        "CommitReservation",
        "ReleaseReservation",
      ],
      defaultTimeoutMs,
    });
    const store = new OrderStore(db);
    const saga = new OrderSaga(
      store,
      { users, products },
      {
        reservationTtlMs: settings.reservationTtlMs,
        settleTimeoutMs: defaultTimeoutMs,
        logger,
      },
    );
    const reconcile = repeat(
      settings.reconcileMs,
      async () => {
        const count = await saga.reconcile();
        if (count > 0) logger.info({ count }, "settled unfinished orders");
      },
      (error) => logger.warn({ err: error }, "reconcile failed"),
    );
    return {
      name: "shop.order.v1.OrderService",
      definition: OrderServiceService,
      handlers: orderHandlers(store, saga, { pollMs: settings.watchPollMs }),
      close: async () => {
        await reconcile.stop();
        users.close();
        products.close();
      },
    };
  },
});

export const orderService = createOrderService();
