import type { Migration } from "../../../kit/db/index.js";

/**
 * A tombstone (a release of an id that held nothing) marked as one, and indexed apart, so that the
 * sweep reads only those, by age. Before, it read every released reservation after a mark kept in
 * memory: a cancelled order's stays for good, so each restart read them all again, a thousand a
 * second, and its DELETE walked them all on SQLite. The tombstones written before it are marked
 * here; one an older replica writes during a rolling upgrade is never forgotten, which costs a row.
 */
export const tombstoneFlag: Migration = {
  name: "0006_tombstone_flag",
  async up(db) {
    await db.schema.alterTable("reservations", (table) => {
      table.boolean("tombstone").notNullable().defaultTo(false);
    });
    await db.raw(
      `UPDATE reservations SET tombstone = TRUE WHERE state = ? AND NOT EXISTS (
        SELECT 1 FROM reservation_lines WHERE reservation_lines.reservation_id = reservations.reservation_id
      )`,
      [RELEASED],
    );
    await db.raw(
      "CREATE INDEX reservations_tombstone_index ON reservations (expire_time) WHERE tombstone",
    );
  },
  async down(db) {
    await db.raw("DROP INDEX reservations_tombstone_index");
    await db.raw("ALTER TABLE reservations DROP COLUMN tombstone");
  },
};

/** ReservationState.RESERVATION_STATE_RELEASED, as this migration shipped. */
const RELEASED = 3;
