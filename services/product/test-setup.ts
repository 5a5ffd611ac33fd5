// What the ProductService handler tests share: the handlers over a fresh database, and
// shorthands for their calls. The tests are handlers.test.ts (the catalogue) and
// reservations.test.ts (stock reservations).
import type { ExecutionContext } from "ava";
import type { Duration } from "../../gen/ts/google/protobuf/duration.js";
import {
  CommitReservationRequest,
  ReleaseReservationRequest,
  type Reservation,
  ReservationState,
  ReserveStockRequest,
} from "../../gen/ts/shop/product/v1/inventory.js";
import {
  CreateProductRequest,
  GetProductRequest,
  ListProductsRequest,
  type Product,
} from "../../gen/ts/shop/product/v1/product.js";
import type { Knex } from "../../kit/db/index.js";
import { callContext } from "../../test/helpers/context.js";
import { testDatabase } from "../../test/helpers/storage.js";
import { productHandlers } from "./handlers.js";
import { inventoryHandlers } from "./inventory/handlers.js";
import { InventoryStore } from "./inventory/index.js";
import { ProductStore } from "./store.js";

export const ctx = (method: string) =>
  callContext(
    ["ReserveStock", "CommitReservation", "ReleaseReservation"].includes(method)
      ? "shop.product.v1.InventoryService"
      : "shop.product.v1.ProductService",
    method,
  );

export const chars = (n: number, c = "x") => c.repeat(n);
export const { HELD, COMMITTED, RELEASED, EXPIRED } = {
  HELD: ReservationState.RESERVATION_STATE_HELD,
  COMMITTED: ReservationState.RESERVATION_STATE_COMMITTED,
  RELEASED: ReservationState.RESERVATION_STATE_RELEASED,
  EXPIRED: ReservationState.RESERVATION_STATE_EXPIRED,
};

/** How many rows a table holds (PostgreSQL counts in a bigint, which comes back as a string). */
export const rows = async (db: Knex, table: string) =>
  Number((await db(table).count({ n: "*" }))[0]?.n);

export interface NewProduct {
  name?: string;
  description?: string;
  stock?: number;
  amountMinor?: string;
  currencyCode?: string;
}

export async function setup(t: ExecutionContext) {
  const db = await testDatabase(t, "product");
  const inventoryStore = new InventoryStore({ db, reads: db });
  const handlers = productHandlers(new ProductStore({ db, reads: db }));
  const inventory = inventoryHandlers(inventoryStore);

  const create = async (fields: NewProduct = {}) =>
    (
      await handlers.createProduct(
        CreateProductRequest.fromPartial({
          product: {
            name: fields.name ?? "Mug",
            description: fields.description ?? "",
            price: {
              currencyCode: fields.currencyCode ?? "EUR",
              amountMinor: fields.amountMinor ?? "1250",
            },
            stockQuantity: fields.stock ?? 10,
          },
        }),
        ctx("CreateProduct"),
      )
    ).product as Product;

  const get = async (productId: string) =>
    (await handlers.getProduct(GetProductRequest.fromPartial({ productId }), ctx("GetProduct")))
      .product as Product;

  const stock = async (...ids: string[]) =>
    Promise.all(ids.map(async (id) => (await get(id)).stockQuantity));

  const count = async () =>
    (
      await handlers.listProducts(
        ListProductsRequest.fromPartial({ pageSize: 1000 }),
        ctx("ListProducts"),
      )
    ).products.length;

  const reserve = async (
    reservationId: string,
    lines: [string, number][],
    ttl: Duration | "none" = { seconds: "60", nanos: 0 },
    commit = false,
  ) =>
    (
      await inventory.reserveStock(
        ReserveStockRequest.fromPartial({
          reservationId,
          lines: lines.map(([productId, quantity]) => ({ productId, quantity })),
          ttl: ttl === "none" ? undefined : ttl,
          commit,
        }),
        ctx("ReserveStock"),
      )
    ).reservation as Reservation;

  const commit = async (reservationId: string) =>
    (
      await inventory.commitReservation(
        CommitReservationRequest.fromPartial({ reservationId }),
        ctx("CommitReservation"),
      )
    ).reservation as Reservation;

  const release = async (reservationId: string) =>
    (
      await inventory.releaseReservation(
        ReleaseReservationRequest.fromPartial({ reservationId }),
        ctx("ReleaseReservation"),
      )
    ).reservation as Reservation;

  return {
    db,
    inventoryStore,
    handlers,
    inventory,
    create,
    get,
    stock,
    count,
    reserve,
    commit,
    release,
  };
}
