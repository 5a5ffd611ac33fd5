import type { Migration } from "../../../kit/db/index.js";

export const createReservations: Migration = {
  name: "0002_create_reservations",
  async up(db) {
    await db.schema.createTable("reservations", (table) => {
      table.string("reservation_id", 64).primary();
      // ReservationState enum number.
      table.integer("state").notNullable();
      table.bigInteger("expire_time").notNullable();
      table.bigInteger("create_time").notNullable();
      table.index(["state", "expire_time"]);
    });
    await db.schema.createTable("reservation_lines", (table) => {
      table
        .string("reservation_id", 64)
        .notNullable()
        .references("reservation_id")
        .inTable("reservations");
      table.integer("line_no").notNullable();
      table.string("product_id", 64).notNullable().references("product_id").inTable("products");
      table.integer("quantity").notNullable();
      table.string("currency_code", 3).notNullable();
      table.bigInteger("unit_price_minor").notNullable();
      table.primary(["reservation_id", "line_no"]);
    });
  },
  async down(db) {
    await db.schema.dropTable("reservation_lines");
    await db.schema.dropTable("reservations");
  },
};
