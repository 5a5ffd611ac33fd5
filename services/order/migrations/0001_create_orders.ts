import type { Migration } from "../../../kit/db/index.js";

export const createOrders: Migration = {
  name: "0001_create_orders",
  async up(db) {
    await db.schema.createTable("orders", (table) => {
      table.increments("seq");
      table.string("order_id", 64).notNullable().unique();
      table.string("user_id", 64).notNullable();
      table.string("request_id", 64).notNullable();
      // The idempotency claim: unique, so two replicas racing on one request id cannot both
      // write; cleared when the order fails, so that a retry can try again.
      table.string("request_key", 64).nullable().unique();
      table.string("reservation_id", 64).notNullable();
      // OrderState enum number.
      table.integer("state").notNullable();
      table.string("currency_code", 3).notNullable();
      table.bigInteger("total_minor").notNullable();
      // Set once the reservation of a failed or stale order has been given back.
      table.boolean("released").notNullable().defaultTo(false);
      table.bigInteger("create_time").notNullable();
      table.bigInteger("update_time").notNullable();
      table.index(["user_id", "seq"]);
      table.index(["state", "released"]);
    });
    await db.schema.createTable("order_lines", (table) => {
      table.string("order_id", 64).notNullable().references("order_id").inTable("orders");
      table.integer("line_no").notNullable();
      table.string("product_id", 64).notNullable();
      table.integer("quantity").notNullable();
      table.bigInteger("unit_price_minor").notNullable();
      table.primary(["order_id", "line_no"]);
    });
  },
  async down(db) {
    await db.schema.dropTable("order_lines");
    await db.schema.dropTable("orders");
  },
};
