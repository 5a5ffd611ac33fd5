// The reservations of stock (InventoryService's store): InventoryStore puts together its paths.
import type { Reservation } from "../../../gen/ts/shop/product/v1/inventory.js";
import { type Knex, RowTurns, sqlOf } from "../../../kit/db/index.js";
import { reserveStock } from "./reserve.js";
import { heldReservations, type Inventory } from "./rows.js";
import { commitReservation, expireReservations, releaseReservation } from "./settle.js";
import { Tombstones } from "./tombstones.js";

export { TOMBSTONE_KEEP_MS } from "./tombstones.js";

/**
 * Reservations of stock: the only code that writes the reservation tables, and the stock they
 * take and give back. Every stock change is a conditional UPDATE inside a transaction whose
 * first statement writes: SQLite takes its one write lock up front, PostgreSQL locks the
 * product's row and checks the condition again on the latest version once the lock is free, so
 * concurrent reservations queue instead of overselling (docs/architecture.md). A transaction
 * locks products in product_id order, so two of them never wait for each other's rows.
 */
export class InventoryStore {
  private readonly inventory: Inventory;
  private readonly tombstones: Tombstones;

  /**
   * The service's database: `reads` for the reads outside a transaction that no write of this
   * store depends on, so that a metrics scrape or a sweep never queues behind waiting writes.
   */
  constructor(env: { db: Knex; reads: Knex }) {
    this.inventory = { db: env.db, reads: env.reads, sql: sqlOf(env.db), turns: new RowTurns() };
    this.tombstones = new Tombstones(env.db);
  }

  /** ReserveStock (reserve.ts): every line held or none, committed at once with `commit`. */
  reserve(
    reservationId: string,
    lines: { productId: string; quantity: number }[],
    ttlMs: number,
    commit = false,
    callerSignal?: () => AbortSignal,
  ): Promise<Reservation> {
    return reserveStock(this.inventory, reservationId, lines, ttlMs, commit, callerSignal);
  }

  /** HELD → COMMITTED (settle.ts). */
  commit(reservationId: string): Promise<Reservation> {
    return commitReservation(this.inventory, reservationId);
  }

  /** Gives held or committed units back; an unknown id becomes a tombstone (settle.ts). */
  release(reservationId: string, callerSignal?: () => AbortSignal): Promise<Reservation> {
    return releaseReservation(this.inventory, reservationId, callerSignal);
  }

  /** How many reservations are held, the oldest, and the first due to expire (rows.ts). */
  held(): Promise<{ count: number; oldest?: number; firstDue?: number }> {
    return heldReservations(this.inventory);
  }

  /** Deletes tombstones older than TOMBSTONE_KEEP_MS (tombstones.ts); how many. */
  forgetTombstones(now = Date.now()): Promise<number> {
    return this.tombstones.forget(now);
  }

  /** Expires held reservations past their TTL (settle.ts); how many expired. */
  expire(
    now = Date.now(),
    onFailure: (reservationId: string, error: unknown) => void = () => {},
  ): Promise<number> {
    return expireReservations(this.inventory, now, onFailure);
  }
}
