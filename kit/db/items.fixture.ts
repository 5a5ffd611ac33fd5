// A one-table schema for the tests of kit/db: items(id INTEGER PRIMARY KEY, name TEXT NOT NULL).
import type { Knex, Migration } from "./index.js";

export const itemsMigrations: Migration[] = [
  {
    name: "0001_items",
    up: (db: Knex) =>
      db.schema.createTable("items", (t) => {
        t.integer("id").primary();
        t.text("name").notNullable();
      }),
    down: (db: Knex) => db.schema.dropTable("items"),
  },
];
