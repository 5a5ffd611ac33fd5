import type { Duration } from "../../gen/ts/google/protobuf/duration.js";
import type { InventoryServiceService } from "../../gen/ts/shop/product/v1/inventory.js";
import type { Product, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { newId } from "../../kit/ids.js";
import { checkMoney } from "../../kit/money.js";
import { requestedPage } from "../../kit/page-token.js";
import type { Handlers } from "../../kit/service.js";
import { check, durationMs, type Violations } from "../../kit/validate.js";
import type { InventoryStore } from "./inventory/index.js";
import { MAX_STOCK, type ProductFields, type ProductStore } from "./store.js";

const MUTABLE = ["name", "description", "price", "stock_quantity"] as const;
const DEFAULT_TTL_MS = 5 * 60_000;

function checkProduct(v: Violations, product: Product, paths: readonly string[]) {
  if (paths.includes("name")) v.name("product.name", product.name, 200);
  if (paths.includes("description")) v.text("product.description", product.description, 2000, 0);
  if (paths.includes("price")) checkMoney(v, "product.price", product.price);
  if (paths.includes("stock_quantity")) {
    v.range("product.stock_quantity", product.stockQuantity, 0, MAX_STOCK);
  }
}

function fieldsOf(product: Product): ProductFields {
  return {
    name: product.name,
    description: product.description,
    currencyCode: product.price?.currencyCode ?? "",
    priceMinor: product.price?.amountMinor ?? "0",
    stockQuantity: product.stockQuantity,
  };
}

function ttlMs(v: Violations, ttl: Duration | undefined): number {
  if (!ttl) return DEFAULT_TTL_MS;
  const ms = durationMs(v, "ttl", ttl);
  if (ms === undefined) return 0;
  // ms drops what is under a millisecond: 1h and 1ns is 3,600,000 too.
  const overAnHour = ms > 3_600_000 || (ms === 3_600_000 && ttl.nanos > 0);
  if (ms < 1000 || overAnHour) v.add("ttl", "must be between 1s and 1h");
  return ms;
}

/** ProductService: each rpc validates its request, then asks the store. */
export function productHandlers(store: ProductStore): Handlers<typeof ProductServiceService> {
  return {
    async createProduct({ product }) {
      const v = check();
      if (!product) v.add("product", "is required");
      else checkProduct(v, product, MUTABLE);
      v.throwIfAny();
      return { product: await store.insert(newId("prd"), fieldsOf(product as Product)) };
    },

    async getProduct({ productId }) {
      check().id("product_id", productId).throwIfAny();
      return { product: await store.get(productId) };
    },

    async listProducts(request, ctx) {
      const { inStockOnly } = request;
      const page = requestedPage(check(), ctx, request, { inStockOnly });
      const { products, nextSeq } = await store.list(page.limit, page.after, page.bytes, {
        inStockOnly,
      });
      return { products, nextPageToken: page.tokenAfter(nextSeq) };
    },

    async updateProduct({ product, updateMask }) {
      const v = check();
      const paths = updateMask ?? [];
      if (!product) v.add("product", "is required");
      else v.id("product.product_id", product.productId);
      v.mask(paths, MUTABLE);
      if (product) checkProduct(v, product, paths);
      v.throwIfAny();
      const fields = fieldsOf(product as Product);
      return {
        product: await store.update((product as Product).productId, {
          ...(paths.includes("name") && { name: fields.name }),
          ...(paths.includes("description") && { description: fields.description }),
          ...(paths.includes("price") && {
            currencyCode: fields.currencyCode,
            priceMinor: fields.priceMinor,
          }),
          ...(paths.includes("stock_quantity") && { stockQuantity: fields.stockQuantity }),
        }),
      };
    },
  };
}

/** InventoryService, the order service's internal API: reservations of stock. */
export function inventoryHandlers(store: InventoryStore): Handlers<typeof InventoryServiceService> {
  return {
    async reserveStock({ reservationId, lines, ttl, commit }, ctx) {
      const v = check().id("reservation_id", reservationId);
      if (lines.length === 0 || lines.length > 100) v.add("lines", "must hold 1 to 100 lines");
      const seen = new Set<string>();
      lines.forEach((line, i) => {
        v.id(`lines[${i}].product_id`, line.productId);
        v.range(`lines[${i}].quantity`, line.quantity, 1, 10_000);
        if (seen.has(line.productId)) v.add(`lines[${i}].product_id`, "appears twice");
        seen.add(line.productId);
      });
      const ms = ttlMs(v, ttl);
      v.throwIfAny();
      const reservation = await store.reserve(reservationId, lines, ms, commit, () => ctx.signal);
      return { reservation };
    },

    async commitReservation({ reservationId }) {
      check().id("reservation_id", reservationId).throwIfAny();
      return { reservation: await store.commit(reservationId) };
    },

    async releaseReservation({ reservationId }, ctx) {
      check().id("reservation_id", reservationId).throwIfAny();
      return { reservation: await store.release(reservationId, () => ctx.signal) };
    },
  };
}
