// The tombstone sweep: released ids that never held anything, forgotten after a day.
import { ReservationState } from "../../../gen/ts/shop/product/v1/inventory.js";
import { type Knex, readTime } from "../../../kit/db/index.js";

/**
 * How long a tombstone refuses a late ReserveStock of its id: a day. A request can arrive that
 * late only from a replica paused (not killed) with it unread, and grpc-js times its deadline
 * from when it reads it.
 */
export const TOMBSTONE_KEEP_MS = 24 * 3_600_000;

/**
 * Released reservations one run looks at, at most. Those with lines (a cancelled order's) are kept
 * for good, so a process's first run, which starts from the beginning, would otherwise read them
 * all at once: seconds of a blocked event loop on SQLite with millions of them.
 */
const SCAN = 1_000;

/** Forgets tombstones, each run from where the last one stopped. */
export class Tombstones {
  /**
   * Where the last run stopped: releases before this time, or at it up to this id, were read.
   * The id breaks ties, since many releases may share a millisecond.
   */
  private readUpTo = { time: 0, id: "" };

  constructor(private readonly db: Knex) {}

  /**
   * Deletes the tombstones (released ids that never held anything) among the next SCAN
   * reservations released more than TOMBSTONE_KEEP_MS before `now`; returns how many. Every
   * refused order leaves one, so they would grow with refused calls alone. A tombstone's
   * expire_time is its release; each run reads on from where the last one stopped.
   */
  async forget(now: number): Promise<number> {
    const cutoff = now - TOMBSTONE_KEEP_MS;
    const released: { reservation_id: string; expire_time: unknown }[] = await this.db(
      "reservations",
    )
      .select("reservation_id", "expire_time")
      .where("state", ReservationState.RESERVATION_STATE_RELEASED)
      .andWhere("expire_time", ">=", this.readUpTo.time)
      .andWhere("expire_time", "<=", cutoff)
      .andWhere((after) =>
        after
          .where("expire_time", ">", this.readUpTo.time)
          .orWhere("reservation_id", ">", this.readUpTo.id),
      )
      .orderBy([{ column: "expire_time" }, { column: "reservation_id" }])
      .limit(SCAN);
    if (released.length === 0) {
      if (cutoff > this.readUpTo.time) this.readUpTo = { time: cutoff, id: "" };
      return 0;
    }
    const ids = released.map((row) => row.reservation_id);
    const withLines = new Set(
      (
        await this.db("reservation_lines").distinct("reservation_id").whereIn("reservation_id", ids)
      ).map((row: { reservation_id: string }) => row.reservation_id),
    );
    const tombstones = ids.filter((id) => !withLines.has(id));
    // Another replica sharing the database may delete some of them first: the mark moves by
    // what was read, so that none is passed over.
    const deleted =
      tombstones.length === 0
        ? 0
        : await this.db("reservations")
            .whereIn("reservation_id", tombstones)
            .andWhere("state", ReservationState.RESERVATION_STATE_RELEASED)
            .del();
    const last = released[released.length - 1] as (typeof released)[number];
    this.readUpTo = { time: readTime(last.expire_time), id: last.reservation_id };
    return deleted;
  }
}
