import { ReservationState } from "../../../gen/ts/shop/product/v1/inventory.js";
import type { Migration } from "../../../kit/db/index.js";

/**
 * A product's own units: in stock, held, or sold (which a cancel may bring back). Reservations
 * only move units between stock and the rest, so only a stock set by CreateProduct or
 * UpdateProduct changes the count, and UpdateProduct checks it against MAX_STOCK without summing
 * every reservation the product ever had. NULL where a build before this one wrote the row.
 */
export const ownedUnits: Migration = {
  name: "0005_owned_units",
  async up(db) {
    await db.schema.alterTable("products", (table) => {
      table.bigInteger("owned_units").nullable();
    });
    await db.raw(
      `UPDATE products SET owned_units = stock_quantity + COALESCE((
        SELECT SUM(l.quantity) FROM reservation_lines l
        JOIN reservations r ON r.reservation_id = l.reservation_id
        WHERE l.product_id = products.product_id AND r.state IN (?, ?)), 0)`,
      [ReservationState.RESERVATION_STATE_HELD, ReservationState.RESERVATION_STATE_COMMITTED],
    );
  },
  async down(db) {
    await db.schema.alterTable("products", (table) => {
      table.dropColumn("owned_units");
    });
  },
};
