import type { Migration } from "../../../kit/db/index.js";

/**
 * When an order became CONFIRMED (ms since the epoch), kept after it is cancelled: a watch that
 * last read it PENDING and next reads it cancelling or cancelled still streams the CONFIRMED it
 * passed through, at its time. Null for an order never confirmed, and for one an older replica
 * confirmed.
 */
export const confirmTime: Migration = {
  name: "0004_confirm_time",
  async up(db) {
    await db.schema.alterTable("orders", (table) => {
      table.bigInteger("confirm_time").nullable();
    });
  },
  // As 0003's: plain DDL, which order_lines' foreign key does not refuse.
  async down(db) {
    await db.raw("ALTER TABLE orders DROP COLUMN confirm_time");
  },
};
