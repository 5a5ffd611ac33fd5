// The tombstone sweep: released ids that never held anything, forgotten after a day.
import { ReservationState } from "../../../gen/ts/shop/product/v1/inventory.js";
import { type Knex, readTime } from "../../../kit/db/index.js";

/**
 * How long a tombstone refuses a late ReserveStock of its id: a day. A request can arrive that
 * late only from a replica paused (not killed) with it unread, and grpc-js times its deadline
 * from when it reads it.
 */
export const TOMBSTONE_KEEP_MS = 24 * 3_600_000;

/** Forgets tombstones, each run from where the last one stopped. */
export class Tombstones {
  /** Those released up to this time (ms since the epoch) are forgotten. */
  private forgottenUpTo = 0;

  constructor(private readonly db: Knex) {}

  /**
   * Deletes up to 1,000 tombstones (released ids that never held anything) released more than
   * TOMBSTONE_KEEP_MS before `now`; returns how many. Every refused order leaves one, so they
   * would grow with refused calls alone. A tombstone's expire_time is its release; released
   * reservations with lines share the index's range and stay for good, so each run reads only
   * the releases since the last run's cutoff (all of them on a process's first run).
   */
  async forget(now: number): Promise<number> {
    const cutoff = now - TOMBSTONE_KEEP_MS;
    const stale: { reservation_id: string; expire_time: unknown }[] = await this.db(
      "reservations as r",
    )
      .select("r.reservation_id", "r.expire_time")
      .where("r.state", ReservationState.RESERVATION_STATE_RELEASED)
      .andWhere("r.expire_time", ">", this.forgottenUpTo)
      .andWhere("r.expire_time", "<=", cutoff)
      .whereNotExists((lines) =>
        lines
          .select(1)
          .from("reservation_lines as l")
          .whereRaw("l.reservation_id = r.reservation_id"),
      )
      .orderBy("r.expire_time")
      .limit(1_000);
    if (stale.length === 0) {
      this.forgottenUpTo = Math.max(this.forgottenUpTo, cutoff);
      return 0;
    }
    // Another replica sharing the database may delete some of them first: the mark moves by
    // what was found, so that none is passed over.
    const ids = stale.map((row) => row.reservation_id);
    const deleted = await this.db("reservations").whereIn("reservation_id", ids).del();
    const last = readTime(stale[stale.length - 1]?.expire_time ?? cutoff);
    this.forgottenUpTo = Math.max(this.forgottenUpTo, stale.length < 1_000 ? cutoff : last - 1);
    return deleted;
  }
}
