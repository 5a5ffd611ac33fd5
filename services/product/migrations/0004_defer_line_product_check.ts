import { engineOf, type Migration } from "../../../kit/db/index.js";

const CONSTRAINT = "reservation_lines_product_id_foreign";

/**
 * PostgreSQL checks that a line's product exists when the reservation commits, not as the line is
 * written. ReserveStock writes its lines before it takes the products' rows: checked at once,
 * each line's key-share lock on a row that other reservations held for their update made the
 * server record both lockers in a MultiXact, a third more of its work per reservation of a busy
 * product. At commit the reservation holds that row itself. SQLite locks no rows: no change.
 */
export const deferLineProductCheck: Migration = {
  name: "0004_defer_line_product_check",
  async up(db) {
    if (engineOf(db) !== "postgres") return;
    await db.raw(
      `ALTER TABLE reservation_lines ALTER CONSTRAINT ${CONSTRAINT} DEFERRABLE INITIALLY DEFERRED`,
    );
  },
  async down(db) {
    if (engineOf(db) !== "postgres") return;
    await db.raw(`ALTER TABLE reservation_lines ALTER CONSTRAINT ${CONSTRAINT} NOT DEFERRABLE`);
  },
};
