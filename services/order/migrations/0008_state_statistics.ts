import { engineOf, type Migration } from "../../../kit/db/index.js";

/**
 * PostgreSQL's planner learns which states and release marks go together. Read apart, they made
 * it expect a seventh or so of all orders to be failed and not yet released (in fact none: only a
 * failed order is ever released), so the reconciler's query, LIMITed, read the whole table every
 * run instead of its indexes, and once that took longer than the statement timeout, every run
 * failed and nothing unsettled was settled. SQLite already reads its indexes for that OR.
 */
export const stateStatistics: Migration = {
  name: "0008_state_statistics",
  async up(db) {
    if (engineOf(db) !== "postgres") return;
    await db.raw(
      "CREATE STATISTICS orders_state_released_stats (mcv) ON state, released FROM orders",
    );
    await db.raw("ANALYZE orders");
  },
  async down(db) {
    if (engineOf(db) !== "postgres") return;
    await db.raw("DROP STATISTICS orders_state_released_stats");
  },
};
