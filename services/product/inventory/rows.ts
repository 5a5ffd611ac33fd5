// Reservations as the database keeps them: their rows, how they read back, and what the store's
// paths share.
import { type Reservation, ReservationState } from "../../../gen/ts/shop/product/v1/inventory.js";
import {
  type Knex,
  type RowTurns,
  readInteger,
  readTime,
  type Sql,
} from "../../../kit/db/index.js";
import { moneyOf, readAmount } from "../../../kit/money.js";

/** One InventoryStore's database handles, which its paths share. */
export interface Inventory {
  db: Knex;
  /** For the reads outside a transaction that no write of the store depends on. */
  reads: Knex;
  /** ReserveStock's transaction, in plain SQL (kit/db/sql.ts). */
  sql: Sql;
  /** Writes to a busy product wait here, not on pooled connections (kit/db/row-turns.ts). */
  turns: RowTurns;
}

export interface ReservationRow {
  reservation_id: string;
  state: ReservationState;
  expire_time: number | string;
  create_time: number | string;
}

export interface LineRow {
  reservation_id: string;
  line_no: number;
  product_id: string;
  quantity: number;
  currency_code: string;
  unit_price_minor: unknown;
}

export const HELD = ReservationState.RESERVATION_STATE_HELD;

export const toReservation = (row: ReservationRow, lines: LineRow[]): Reservation => ({
  reservationId: row.reservation_id,
  state: row.state,
  expireTime: new Date(readTime(row.expire_time)),
  createTime: new Date(readTime(row.create_time)),
  lines: lines.map((line) => ({
    productId: line.product_id,
    quantity: line.quantity,
    unitPrice: moneyOf(line.currency_code, line.unit_price_minor),
  })),
});

/**
 * A tombstone (forgetTombstones) read back after the sweep forgot it: the caller that just found
 * it gets it as it was, released with nothing held.
 */
export const forgotten = (reservationId: string): Reservation => {
  const now = Date.now();
  return toReservation(
    {
      reservation_id: reservationId,
      state: ReservationState.RESERVATION_STATE_RELEASED,
      expire_time: now,
      create_time: now,
    },
    [],
  );
};

/** A stored unit price; a price that cannot be read exactly is never used to charge. */
export const priceOf = (row: { unit_price_minor: unknown; product_id: string }): bigint => {
  const amount = readAmount(row.unit_price_minor);
  if (amount === undefined) throw new Error(`product ${row.product_id} has an unreadable price`);
  return amount;
};

/** The order writes lock products in: by UTF-16 code units, whatever the database's collation. */
export const inLockOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

export async function readReservation(
  db: Knex | Knex.Transaction,
  reservationId: string,
): Promise<Reservation | undefined> {
  // One query: the reservation with its lines (one row with null line columns when it has none).
  const rows: (ReservationRow & Partial<LineRow>)[] = await db("reservations as r")
    .leftJoin("reservation_lines as l", "l.reservation_id", "r.reservation_id")
    .where("r.reservation_id", reservationId)
    .orderBy("l.line_no")
    .select(
      "r.reservation_id",
      "r.state",
      "r.expire_time",
      "r.create_time",
      "l.line_no",
      "l.product_id",
      "l.quantity",
      "l.currency_code",
      "l.unit_price_minor",
    );
  const [row] = rows;
  if (!row) return undefined;
  return toReservation(row, row.line_no == null ? [] : (rows as LineRow[]));
}

/**
 * How many reservations are held, since when the oldest one, and when the first of them is due
 * to expire (ms since the epoch).
 */
export async function heldReservations(
  inventory: Inventory,
): Promise<{ count: number; oldest?: number; firstDue?: number }> {
  // A count and a bigint come back as numbers from SQLite and as decimal strings from PostgreSQL.
  const [row] = (await inventory
    .reads("reservations")
    .where({ state: HELD })
    .count({ count: "*" })
    .min({ oldest: "create_time" })
    .min({ firstDue: "expire_time" })) as {
    count: unknown;
    oldest: unknown;
    firstDue: unknown;
  }[];
  const count = Number(readInteger(row?.count) ?? 0);
  const time = (value: unknown) =>
    value === null || value === undefined ? undefined : readTime(value);
  const oldest = time(row?.oldest);
  const firstDue = time(row?.firstDue);
  return {
    count,
    ...(oldest !== undefined && { oldest }),
    ...(firstDue !== undefined && { firstDue }),
  };
}
