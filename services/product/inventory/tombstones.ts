// The tombstone sweep: released ids that never held anything, forgotten after a day.
import type { Knex } from "../../../kit/db/index.js";

/**
 * How long a tombstone refuses a late ReserveStock of its id: a day. A request can arrive that
 * late only from a replica paused (not killed) with it unread, and grpc-js times its deadline
 * from when it reads it.
 */
export const TOMBSTONE_KEEP_MS = 24 * 3_600_000;

/** Tombstones one run deletes, at most: a backlog goes in steps, not in one long statement. */
const SCAN = 1_000;

/** Forgets tombstones, oldest first. */
export class Tombstones {
  constructor(private readonly db: Knex) {}

  /**
   * Deletes up to SCAN tombstones (released ids that never held anything, marked so as they
   * were written) released more than TOMBSTONE_KEEP_MS before `now`; returns how many. Every
   * refused order leaves one, so they would grow with refused calls alone. A tombstone's
   * expire_time is its release.
   */
  async forget(now: number): Promise<number> {
    const due: { reservation_id: string }[] = await this.db("reservations")
      .select("reservation_id")
      // As reservations_tombstone_index's WHERE reads, so that the planner takes the index.
      .whereRaw("tombstone")
      .andWhere("expire_time", "<=", now - TOMBSTONE_KEEP_MS)
      .orderBy("expire_time")
      .limit(SCAN);
    if (due.length === 0) return 0;
    // By primary key alone: a tombstone never changes, and another replica sharing the database
    // may have deleted some of them first.
    return this.db("reservations")
      .whereIn(
        "reservation_id",
        due.map((row) => row.reservation_id),
      )
      .del();
  }
}
