import type { Migration } from "../../../kit/db/index.js";

/**
 * Until when (ms since the epoch) one replica's reconciler run holds an unsettled order, so that
 * the other replicas' runs leave it alone; null when none does. An older replica ignores it and
 * settles the order too, as every replica did before: each step is conditional, so that costs
 * only repeated calls.
 */
export const reconcileLease: Migration = {
  name: "0007_reconcile_lease",
  async up(db) {
    await db.schema.alterTable("orders", (table) => {
      table.bigInteger("reconcile_until").nullable();
    });
  },
  // As 0003's: plain DDL, which order_lines' foreign key does not refuse.
  async down(db) {
    await db.raw("ALTER TABLE orders DROP COLUMN reconcile_until");
  },
};
