import type { Migration } from "../../../kit/db/index.js";

export const createUsers: Migration = {
  name: "0001_create_users",
  async up(db) {
    await db.schema.createTable("users", (table) => {
      // seq orders pages; user_id is the public id.
      table.increments("seq");
      table.string("user_id", 64).notNullable().unique();
      table.string("email", 254).notNullable();
      table.string("email_key", 254).notNullable().unique();
      table.string("display_name", 100).notNullable();
      table.bigInteger("create_time").notNullable();
      table.bigInteger("update_time").notNullable();
    });
  },
  async down(db) {
    await db.schema.dropTable("users");
  },
};
