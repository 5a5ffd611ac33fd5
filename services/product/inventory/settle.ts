// What becomes of a reservation once made: committed, released or expired, its units given
// back to stock.
import { type Reservation, ReservationState } from "../../../gen/ts/shop/product/v1/inventory.js";
import {
  inTransaction,
  isCheckViolation,
  type Knex,
  updateTimeAfter,
} from "../../../kit/db/index.js";
import { errors } from "../../../kit/errors.js";
import { MAX_STOCK, stockLimit } from "../store.js";
import {
  forgotten,
  HELD,
  type Inventory,
  inLockOrder,
  type LineRow,
  readReservation,
} from "./rows.js";

/** HELD → COMMITTED; a repeat returns it; released, expired or past its TTL fails. */
export async function commitReservation(
  inventory: Inventory,
  reservationId: string,
): Promise<Reservation> {
  const now = Date.now();
  const committed = await inventory
    .db("reservations")
    .where({ reservation_id: reservationId, state: HELD })
    .andWhere("expire_time", ">", now)
    .update({ state: ReservationState.RESERVATION_STATE_COMMITTED });
  let reservation = await readReservation(inventory.db, reservationId);
  if (committed === 0 && reservation?.state === HELD) {
    // Past its TTL but not swept yet: expire this one now, so its units come back at once.
    await expireOne(inventory, reservationId, now).catch(() => false);
    reservation = await readReservation(inventory.db, reservationId);
  }
  if (!reservation) {
    throw errors.notFound("RESERVATION_NOT_FOUND", `reservation ${reservationId} does not exist`, {
      reservation_id: reservationId,
    });
  }
  if (reservation.state !== ReservationState.RESERVATION_STATE_COMMITTED) {
    const state = reservation.state === HELD ? "past its TTL" : ReservationState[reservation.state];
    throw errors.failedPrecondition(
      "RESERVATION_NOT_HELD",
      `reservation ${reservationId} is ${state}, not held`,
      { metadata: { reservation_id: reservationId } },
    );
  }
  return reservation;
}

/**
 * Gives held or committed units back. Unknown ids become released tombstones. Nothing is written
 * when the caller goes away while the release waits for its turn.
 */
export async function releaseReservation(
  inventory: Inventory,
  reservationId: string,
  callerSignal?: () => AbortSignal,
): Promise<Reservation> {
  const now = Date.now();
  const giveBack = async (trx: Knex.Transaction) => {
    const released = await trx("reservations")
      .where({ reservation_id: reservationId })
      .whereIn("state", [HELD, ReservationState.RESERVATION_STATE_COMMITTED])
      .update({ state: ReservationState.RESERVATION_STATE_RELEASED });
    if (released === 1) await restock(trx, reservationId, now);
    return released === 1;
  };
  // A reservation's lines never change: the products read here are the rows it will lock.
  const lines: { product_id: string }[] = await inventory
    .reads("reservation_lines")
    .where({ reservation_id: reservationId })
    .select("product_id");
  const products = lines.map((line) => line.product_id);
  await inventory.turns.run(
    products,
    () =>
      inTransaction(inventory.db, async (trx) => {
        if (await giveBack(trx)) return;
        const recorded = await trx("reservations")
          .insert({
            reservation_id: reservationId,
            state: ReservationState.RESERVATION_STATE_RELEASED,
            expire_time: now,
            create_time: now,
            tombstone: true,
          })
          .onConflict("reservation_id")
          .ignore()
          .returning("reservation_id");
        // PostgreSQL: a ReserveStock committing this id meanwhile made the insert wait, then skip.
        // Its units are visible now and are given back here, or a committed reservation would keep
        // them with nothing left to release it.
        if (recorded.length === 0) await giveBack(trx);
      }),
    callerSignal,
  );
  return (await readReservation(inventory.db, reservationId)) ?? forgotten(reservationId);
}

/**
 * Expires held reservations past their TTL and returns their units, each in a transaction of
 * its own: one that cannot give its units back stays held, is passed to `onFailure`, and never
 * keeps the others from expiring. Returns how many expired.
 */
export async function expireReservations(
  inventory: Inventory,
  now: number,
  onFailure: (reservationId: string, error: unknown) => void,
): Promise<number> {
  const due: { reservation_id: string }[] = await inventory
    .reads("reservations")
    .where({ state: HELD })
    .andWhere("expire_time", "<=", now)
    .orderBy("expire_time")
    .limit(1_000)
    .select("reservation_id");
  let expired = 0;
  for (const { reservation_id: reservationId } of due) {
    try {
      if (await expireOne(inventory, reservationId, now)) expired++;
    } catch (error) {
      onFailure(reservationId, error);
    }
  }
  return expired;
}

function expireOne(inventory: Inventory, reservationId: string, now: number): Promise<boolean> {
  return inTransaction(inventory.db, async (trx) => {
    const count = await trx("reservations")
      .where({ reservation_id: reservationId, state: HELD })
      .andWhere("expire_time", "<=", now)
      .update({ state: ReservationState.RESERVATION_STATE_EXPIRED });
    if (count === 1) await restock(trx, reservationId, now);
    return count === 1;
  });
}

/**
 * Returns a reservation's units to stock. UpdateProduct keeps room for them under MAX_STOCK;
 * should they still not fit (data from an older version), FAILED_PRECONDITION and nothing moves.
 */
async function restock(trx: Knex.Transaction, reservationId: string, now: number) {
  const lines = await trx<LineRow>("reservation_lines").where({ reservation_id: reservationId });
  // Not ORDER BY: outside the C locale PostgreSQL sorts "prd_a" before "prd_Z", and a release
  // would then lock rows in another order than a reservation, and the two could deadlock.
  lines.sort((a, b) => inLockOrder(a.product_id, b.product_id));
  for (const line of lines) {
    try {
      await trx("products")
        .where({ product_id: line.product_id })
        .update({
          stock_quantity: trx.raw("stock_quantity + ?", [line.quantity]),
          // As stock_quantity moves: the product's count of its own units stays right.
          counted_stock: trx.raw("counted_stock + ?", [line.quantity]),
          update_time: updateTimeAfter(trx, now),
        });
    } catch (error) {
      if (!isCheckViolation(error)) throw error;
      throw stockLimit(
        line.product_id,
        `giving back ${line.quantity} units of reservation ${reservationId} would pass the stock limit of ${MAX_STOCK}`,
      );
    }
  }
}
