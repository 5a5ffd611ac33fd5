import { InventoryServiceService } from "../../gen/ts/shop/product/v1/inventory.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { env } from "../../kit/config.js";
import { adminOnly, internal, open } from "../../kit/security/auth.js";
import { defineService } from "../../kit/service.js";
import { productHandlers } from "./handlers.js";
import { inventoryHandlers } from "./inventory/handlers.js";
import { InventoryStore } from "./inventory/index.js";
import { reservationMetrics } from "./metrics.js";
import { migrations } from "./migrations/index.js";
import { ProductStore } from "./store.js";

export interface ProductSettings {
  /** How often held reservations past their TTL are expired. */
  sweepMs: number;
}

export const productSettings = (): ProductSettings => ({
  sweepMs: env.ms("SHOP_RESERVATION_SWEEP_MS", 1_000, 10),
});

export const createProductService = (overrides: Partial<ProductSettings> = {}) =>
  defineService({
    name: "product",
    serves: { ProductService: ProductServiceService, InventoryService: InventoryServiceService },
    dependencies: {},
    migrations,
    settings: ["SHOP_RESERVATION_SWEEP_MS"],
    access: {
      // The catalogue is open to read; only admins change it.
      ProductService: {
        createProduct: adminOnly,
        getProduct: open,
        listProducts: open,
        updateProduct: adminOnly,
      },
      // The order service's private API, by its mesh identity.
      InventoryService: {
        reserveStock: internal("order"),
        commitReservation: internal("order"),
        releaseReservation: internal("order"),
      },
    },
    implement: ({ db, reads, logger, metrics }) => {
      const settings = { ...productSettings(), ...overrides };
      const inventory = new InventoryStore({ db, reads });
      const reservations = reservationMetrics(metrics, inventory);
      // Held reservations past their TTL give their stock back, so a crashed caller cannot pin it;
      // tombstones a day old go.
      const sweep = async () => {
        const count = await inventory.expire(Date.now(), (reservationId, error) => {
          reservations.expiryFailed();
          logger.warn({ err: error, reservationId }, "reservation could not expire; will retry");
        });
        reservations.expired(count);
        if (count > 0) logger.info({ count }, "expired reservations");
        const forgotten = await inventory.forgetTombstones();
        if (forgotten > 0) logger.info({ count: forgotten }, "forgot day-old release tombstones");
      };
      return {
        handlers: {
          ProductService: productHandlers(new ProductStore({ db, reads })),
          InventoryService: inventoryHandlers(inventory),
        },
        background: [{ name: "reservation_sweep", everyMs: settings.sweepMs, run: sweep }],
      };
    },
  });

export const productService = createProductService();
