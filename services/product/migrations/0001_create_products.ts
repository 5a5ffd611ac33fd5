import type { Migration } from "../../../kit/db/index.js";

export const createProducts: Migration = {
  name: "0001_create_products",
  async up(db) {
    await db.schema.createTable("products", (table) => {
      table.increments("seq");
      table.string("product_id", 64).notNullable().unique();
      table.string("name", 200).notNullable();
      table.string("description", 2000).notNullable();
      table.string("currency_code", 3).notNullable();
      table.bigInteger("price_minor").notNullable();
      // The database refuses negative stock even if the code ever tried.
      table.integer("stock_quantity").notNullable().checkBetween([0, 1_000_000_000]);
      table.bigInteger("create_time").notNullable();
      table.bigInteger("update_time").notNullable();
    });
  },
  async down(db) {
    await db.schema.dropTable("products");
  },
};
