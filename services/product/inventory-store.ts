import {
  type Reservation,
  type ReservationLine,
  ReservationState,
} from "../../gen/ts/shop/product/v1/inventory.js";
import {
  type Binding,
  inTransaction,
  isCheckViolation,
  type Knex,
  RowTurns,
  readInteger,
  readTime,
  type Sql,
  sqlOf,
} from "../../kit/db/index.js";
import { errors } from "../../kit/errors.js";
import { moneyOf, readAmount, totalOf } from "../../kit/money.js";
import { MAX_STOCK, type ProductRow, productNotFound, stockLimit } from "./store.js";

type PriceRow = Pick<ProductRow, "currency_code" | "price_minor">;

interface ReservationRow {
  reservation_id: string;
  state: ReservationState;
  expire_time: number | string;
  create_time: number | string;
}

interface LineRow {
  reservation_id: string;
  line_no: number;
  product_id: string;
  quantity: number;
  currency_code: string;
  unit_price_minor: unknown;
}

/** What pricedLinesSql gives back for each line it wrote. */
type PricedLine = Pick<LineRow, "line_no" | "currency_code" | "unit_price_minor">;

const toReservation = (row: ReservationRow, lines: LineRow[]): Reservation => ({
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
const forgotten = (reservationId: string): Reservation => {
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
const priceOf = (row: { unit_price_minor: unknown; product_id: string }): bigint => {
  const amount = readAmount(row.unit_price_minor);
  if (amount === undefined) throw new Error(`product ${row.product_id} has an unreadable price`);
  return amount;
};

const HELD = ReservationState.RESERVATION_STATE_HELD;

/**
 * How long a tombstone refuses a late ReserveStock of its id: a day. A request can arrive that
 * late only from a replica paused (not killed) with it unread, and grpc-js times its deadline
 * from when it reads it.
 */
export const TOMBSTONE_KEEP_MS = 24 * 3_600_000;

/** The order writes lock products in: by UTF-16 code units, whatever the database's collation. */
const inLockOrder = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/**
 * Writes a reservation's lines, each priced from its product's row, and returns what it wrote;
 * a line whose product does not exist writes nothing. Bindings per line: reservation id, line
 * number, quantity, product id.
 */
const pricedLinesSql = (count: number) =>
  "INSERT INTO reservation_lines" +
  " (reservation_id, line_no, product_id, quantity, currency_code, unit_price_minor) " +
  Array.from(
    { length: count },
    () =>
      "SELECT ?, CAST(? AS INTEGER), product_id, CAST(? AS INTEGER), currency_code, price_minor" +
      " FROM products WHERE product_id = ?",
  ).join(" UNION ALL ") +
  " RETURNING line_no, currency_code, unit_price_minor";

const sameLines = (a: Pick<ReservationLine, "productId" | "quantity">[], b: LineRow[]) =>
  a.length === b.length &&
  a.every((line, i) => line.productId === b[i]?.product_id && line.quantity === b[i]?.quantity);

/**
 * Reservations of stock: the only code that writes the reservation tables, and the stock they
 * take and give back. Every stock change is a conditional UPDATE inside a transaction whose
 * first statement writes: SQLite takes its one write lock up front, PostgreSQL locks the
 * product's row and checks the condition again on the latest version once the lock is free, so
 * concurrent reservations queue instead of overselling (docs/architecture.md). A transaction
 * locks products in product_id order, so two of them never wait for each other's rows.
 */
export class InventoryStore {
  /** ReserveStock's transaction, in plain SQL (kit/db/sql.ts). */
  private readonly sql: Sql;
  /** Writes to a busy product wait here, not on pooled connections (kit/db/row-turns.ts). */
  private readonly turns = new RowTurns();
  /** forgetTombstones has forgotten those released up to this time (ms since the epoch). */
  private forgottenUpTo = 0;

  /**
   * The service's database: `reads` for the reads outside a transaction that no write of this
   * store depends on, so that a metrics scrape or a sweep never queues behind waiting writes.
   */
  constructor(private readonly env: { db: Knex; reads: Knex }) {
    this.sql = sqlOf(env.db);
  }

  private async readReservation(
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
   * Holds every line or none, committed at once with `commit`. A repeat with the same id returns
   * the reservation as it stands; the same id with other lines is ALREADY_EXISTS. Nothing is
   * written when the caller goes away while the reservation waits for its turn (RowTurns).
   */
  async reserve(
    reservationId: string,
    lines: { productId: string; quantity: number }[],
    ttlMs: number,
    commit = false,
    callerSignal?: () => AbortSignal,
  ): Promise<Reservation> {
    const now = Date.now();
    const made: ReservationRow = {
      reservation_id: reservationId,
      state: commit ? ReservationState.RESERVATION_STATE_COMMITTED : HELD,
      expire_time: now + ttlMs,
      create_time: now,
    };
    const products = lines.map((line) => line.productId);
    const outcome = await this.turns
      .run(
        products,
        () =>
          this.sql.transaction(async (trx) => {
            const claimed = await trx.query(
              "INSERT INTO reservations (reservation_id, state, expire_time, create_time) VALUES (?, ?, ?, ?)" +
                " ON CONFLICT (reservation_id) DO NOTHING RETURNING reservation_id",
              [reservationId, made.state, made.expire_time, made.create_time],
            );
            if (claimed.length === 0) return { repeat: true as const };
            // Lines first, each priced from the catalogue as it stands: no product row is locked
            // until the stock updates below, so a busy product's lock is held for those and the
            // commit alone (PostgreSQL, where the lines' product check waits for the commit:
            // migration 0004; SQLite holds one lock throughout).
            const priced = await trx.query<PricedLine>(
              pricedLinesSql(lines.length),
              lines.flatMap((line, i) => [reservationId, i, line.quantity, line.productId]),
            );
            const price = new Map(priced.map((row) => [Number(row.line_no), row]));
            const sorted = [...lines.entries()].sort(([, a], [, b]) =>
              inLockOrder(a.productId, b.productId),
            );
            const missing = sorted.filter(([i]) => !price.has(i)).map(([, line]) => line.productId);
            if (missing.length > 0) throw Object.assign(new Error("short"), { short: missing });
            const lineRows: LineRow[] = lines.map((line, i) => {
              const { currency_code, unit_price_minor } = price.get(i) as PricedLine;
              return {
                reservation_id: reservationId,
                line_no: i,
                product_id: line.productId,
                quantity: line.quantity,
                currency_code,
                unit_price_minor,
              };
            });
            const short: string[] = [];
            for (const [i, line] of sorted) {
              const [taken] = await trx.query<PriceRow>(
                "UPDATE products SET stock_quantity = stock_quantity - ?, update_time = ?" +
                  " WHERE product_id = ? AND stock_quantity >= ? RETURNING currency_code, price_minor",
                [line.quantity, now, line.productId, line.quantity],
              );
              if (!taken) {
                short.push(line.productId);
                continue;
              }
              // The price changed between the line's write and the lock (PostgreSQL): the line takes
              // the price the stock was taken at, as if the lock had come first.
              const row = lineRows[i] as LineRow;
              if (
                taken.currency_code !== row.currency_code ||
                readAmount(taken.price_minor) !== readAmount(row.unit_price_minor)
              ) {
                await trx.query(
                  "UPDATE reservation_lines SET currency_code = ?, unit_price_minor = ?" +
                    " WHERE reservation_id = ? AND line_no = ?",
                  [taken.currency_code, taken.price_minor as Binding, reservationId, i],
                );
                row.currency_code = taken.currency_code;
                row.unit_price_minor = taken.price_minor;
              }
            }
            if (short.length > 0) {
              // Undo the whole transaction: nothing is held.
              throw Object.assign(new Error("short"), { short });
            }
            // One currency, at an amount Money can carry: refused here, inside the transaction, so
            // that nothing is held, not even for the moment an order would take to refuse it.
            const [currency = "", ...others] = new Set(lineRows.map((row) => row.currency_code));
            if (others.length > 0) {
              throw errors.failedPrecondition(
                "CURRENCY_MISMATCH",
                `the products are priced in different currencies: ${[currency, ...others].join(", ")}`,
              );
            }
            totalOf(
              currency,
              lineRows.map((row) => ({ quantity: row.quantity, unitPriceMinor: priceOf(row) })),
            );
            // What was just written is the answer: no need to read it back.
            return { repeat: false as const, reservation: toReservation(made, lineRows) };
          }),
        callerSignal,
      )
      .catch(async (error: Error & { short?: string[] }) => {
        if (!error.short) throw error;
        throw await this.shortageError(lines, error.short);
      });

    if (!outcome.repeat) return outcome.reservation;
    const reservation =
      (await this.readReservation(this.env.db, reservationId)) ?? forgotten(reservationId);
    const stored = reservation.lines.map((l) => ({
      product_id: l.productId,
      quantity: l.quantity,
    }));
    const tombstone =
      reservation.state === ReservationState.RESERVATION_STATE_RELEASED && stored.length === 0;
    if (!tombstone && !sameLines(lines, stored as LineRow[])) {
      throw errors.alreadyExists(
        "RESERVATION_MISMATCH",
        `reservation ${reservationId} already exists with other lines`,
        { reservation_id: reservationId },
      );
    }
    return reservation;
  }

  /** NOT_FOUND for an unknown product, else FAILED_PRECONDITION naming every short line. */
  private async shortageError(
    lines: { productId: string; quantity: number }[],
    shortIds: string[],
  ): Promise<Error> {
    const rows = await this.env.reads<ProductRow>("products").whereIn("product_id", shortIds);
    const stock = new Map(rows.map((row) => [row.product_id, row.stock_quantity]));
    const missing = shortIds.find((id) => !stock.has(id));
    if (missing) return productNotFound(missing);
    const violations = lines
      .filter((line) => shortIds.includes(line.productId))
      .map((line) => ({
        type: "STOCK",
        subject: line.productId,
        description: `requested ${line.quantity}, ${stock.get(line.productId)} available`,
      }));
    return errors.failedPrecondition(
      "INSUFFICIENT_STOCK",
      `not enough stock for ${violations.map((v) => v.subject).join(", ")}`,
      { preconditionViolations: violations },
    );
  }

  /** HELD → COMMITTED; a repeat returns it; released, expired or past its TTL fails. */
  async commit(reservationId: string): Promise<Reservation> {
    const now = Date.now();
    const committed = await this.env
      .db("reservations")
      .where({ reservation_id: reservationId, state: HELD })
      .andWhere("expire_time", ">", now)
      .update({ state: ReservationState.RESERVATION_STATE_COMMITTED });
    let reservation = await this.readReservation(this.env.db, reservationId);
    if (committed === 0 && reservation?.state === HELD) {
      // Past its TTL but not swept yet: expire this one now, so its units come back at once.
      await this.expireOne(reservationId, now).catch(() => false);
      reservation = await this.readReservation(this.env.db, reservationId);
    }
    if (!reservation) {
      throw errors.notFound(
        "RESERVATION_NOT_FOUND",
        `reservation ${reservationId} does not exist`,
        {
          reservation_id: reservationId,
        },
      );
    }
    if (reservation.state !== ReservationState.RESERVATION_STATE_COMMITTED) {
      const state =
        reservation.state === HELD ? "past its TTL" : ReservationState[reservation.state];
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
  async release(reservationId: string, callerSignal?: () => AbortSignal): Promise<Reservation> {
    const now = Date.now();
    const giveBack = async (trx: Knex.Transaction) => {
      const released = await trx("reservations")
        .where({ reservation_id: reservationId })
        .whereIn("state", [HELD, ReservationState.RESERVATION_STATE_COMMITTED])
        .update({ state: ReservationState.RESERVATION_STATE_RELEASED });
      if (released === 1) await this.restock(trx, reservationId, now);
      return released === 1;
    };
    // A reservation's lines never change: the products read here are the rows it will lock.
    const lines: { product_id: string }[] = await this.env
      .reads("reservation_lines")
      .where({ reservation_id: reservationId })
      .select("product_id");
    const products = lines.map((line) => line.product_id);
    await this.turns.run(
      products,
      () =>
        inTransaction(this.env.db, async (trx) => {
          if (await giveBack(trx)) return;
          const recorded = await trx("reservations")
            .insert({
              reservation_id: reservationId,
              state: ReservationState.RESERVATION_STATE_RELEASED,
              expire_time: now,
              create_time: now,
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
    return (await this.readReservation(this.env.db, reservationId)) ?? forgotten(reservationId);
  }

  /**
   * How many reservations are held, since when the oldest one, and when the first of them is due
   * to expire (ms since the epoch).
   */
  async held(): Promise<{ count: number; oldest?: number; firstDue?: number }> {
    // A count and a bigint come back as numbers from SQLite and as decimal strings from PostgreSQL.
    const [row] = (await this.env
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

  /**
   * Deletes up to 1,000 tombstones (released ids that never held anything) released more than
   * TOMBSTONE_KEEP_MS before `now`; returns how many. Every refused order leaves one, so they
   * would grow with refused calls alone. A tombstone's expire_time is its release; released
   * reservations with lines share the index's range and stay for good, so each run reads only
   * the releases since the last run's cutoff (all of them on a process's first run).
   */
  async forgetTombstones(now = Date.now()): Promise<number> {
    const cutoff = now - TOMBSTONE_KEEP_MS;
    const stale: { reservation_id: string; expire_time: unknown }[] = await this.env
      .db("reservations as r")
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
    const deleted = await this.env.db("reservations").whereIn("reservation_id", ids).del();
    const last = readTime(stale[stale.length - 1]?.expire_time ?? cutoff);
    this.forgottenUpTo = Math.max(this.forgottenUpTo, stale.length < 1_000 ? cutoff : last - 1);
    return deleted;
  }

  /**
   * Expires held reservations past their TTL and returns their units, each in a transaction of
   * its own: one that cannot give its units back stays held, is passed to `onFailure`, and never
   * keeps the others from expiring. Returns how many expired.
   */
  async expire(
    now = Date.now(),
    onFailure: (reservationId: string, error: unknown) => void = () => {},
  ): Promise<number> {
    const due: { reservation_id: string }[] = await this.env
      .reads("reservations")
      .where({ state: HELD })
      .andWhere("expire_time", "<=", now)
      .orderBy("expire_time")
      .limit(1_000)
      .select("reservation_id");
    let expired = 0;
    for (const { reservation_id: reservationId } of due) {
      try {
        if (await this.expireOne(reservationId, now)) expired++;
      } catch (error) {
        onFailure(reservationId, error);
      }
    }
    return expired;
  }

  private expireOne(reservationId: string, now: number): Promise<boolean> {
    return inTransaction(this.env.db, async (trx) => {
      const count = await trx("reservations")
        .where({ reservation_id: reservationId, state: HELD })
        .andWhere("expire_time", "<=", now)
        .update({ state: ReservationState.RESERVATION_STATE_EXPIRED });
      if (count === 1) await this.restock(trx, reservationId, now);
      return count === 1;
    });
  }

  /**
   * Returns a reservation's units to stock. UpdateProduct keeps room for them under MAX_STOCK;
   * should they still not fit (data from an older version), FAILED_PRECONDITION and nothing moves.
   */
  private async restock(trx: Knex.Transaction, reservationId: string, now: number) {
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
            update_time: now,
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
}
