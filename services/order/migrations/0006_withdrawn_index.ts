import type { Migration } from "../../../kit/db/index.js";

/**
 * The withdrawn orders, indexed apart: the reconciler looks for those left undeleted at every run,
 * and without it read every FAILED order ever kept to find them. Partial: the orders that are
 * not withdrawn, nearly all, cost their writes nothing.
 */
export const withdrawnIndex: Migration = {
  name: "0006_withdrawn_index",
  async up(db) {
    await db.raw("CREATE INDEX orders_withdrawn_index ON orders (state) WHERE withdrawn");
  },
  async down(db) {
    await db.raw("DROP INDEX orders_withdrawn_index");
  },
};
