import type { Migration } from "../../../kit/db/index.js";

/**
 * When an order became CANCELLING (ms since the epoch), kept once it is CANCELLED: a watch that
 * first reads it cancelled still streams the CANCELLING it passed through, at its time. Null for
 * an order never cancelled, and for one an older replica cancelled.
 */
export const cancelTime: Migration = {
  name: "0003_cancel_time",
  async up(db) {
    await db.schema.alterTable("orders", (table) => {
      table.bigInteger("cancel_time").nullable();
    });
  },
  // Plain DDL: knex drops a column in SQLite by copying the table, which order_lines' foreign key
  // refuses. SQLite has had DROP COLUMN since 3.35.
  async down(db) {
    await db.raw("ALTER TABLE orders DROP COLUMN cancel_time");
  },
};
