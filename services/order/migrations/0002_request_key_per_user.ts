import type { Migration } from "../../../kit/db/index.js";

/**
 * The idempotency claim is unique per user, not across users: one user's request id neither
 * blocks nor reveals another user's order. Names as knex gave them in 0001.
 */
export const requestKeyPerUser: Migration = {
  name: "0002_request_key_per_user",
  async up(db) {
    await db.schema.alterTable("orders", (table) => {
      table.unique(["user_id", "request_key"], { indexName: "orders_user_id_request_key_unique" });
      table.dropUnique(["request_key"], "orders_request_key_unique");
    });
  },
  // Fails while two users hold the same key: rolled back, nothing changed.
  async down(db) {
    await db.schema.alterTable("orders", (table) => {
      table.unique(["request_key"], { indexName: "orders_request_key_unique" });
      table.dropUnique(["user_id", "request_key"], "orders_user_id_request_key_unique");
    });
  },
};
