import type { Migration } from "../../../kit/db/index.js";

/**
 * A product's own units: in stock, held, or sold (which a cancel may bring back). Reservations
 * only move units between stock and the rest, so only a stock set by CreateProduct or
 * UpdateProduct changes the count, and UpdateProduct checks it against MAX_STOCK without summing
 * every reservation the product ever had. `counted_stock` is the stock as this build last moved
 * it: a build before this one changes `stock_quantity` alone, so where the two differ the count
 * is not trusted, and UpdateProduct sums the reservations and counts again. Both start NULL: a
 * product is counted at its first stock change, so the migration itself reads nothing.
 */
export const ownedUnits: Migration = {
  name: "0005_owned_units",
  async up(db) {
    await db.schema.alterTable("products", (table) => {
      table.bigInteger("owned_units").nullable();
      table.integer("counted_stock").nullable();
    });
  },
  // Plain DDL: knex rebuilds the table on SQLite to drop a column, which reservation_lines'
  // foreign key refuses once a reservation exists.
  async down(db) {
    await db.raw("ALTER TABLE products DROP COLUMN owned_units");
    await db.raw("ALTER TABLE products DROP COLUMN counted_stock");
  },
};
