import type { Migration } from "../../../kit/db/index.js";

/**
 * An order CreateOrder refused after writing it: failed, then deleted once its reservation is
 * released, so that no order was placed. Until then (its release waits for the product service)
 * no read shows it. False for every order an older replica wrote.
 */
export const withdrawn: Migration = {
  name: "0005_withdrawn",
  async up(db) {
    await db.schema.alterTable("orders", (table) => {
      table.boolean("withdrawn").notNullable().defaultTo(false);
    });
  },
  // As 0003's: plain DDL, which order_lines' foreign key does not refuse.
  async down(db) {
    await db.raw("ALTER TABLE orders DROP COLUMN withdrawn");
  },
};
