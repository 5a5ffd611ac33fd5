// ReserveStock: every line held or none, priced from the catalogue, the stock taken last.
import {
  type Reservation,
  type ReservationLine,
  ReservationState,
} from "../../../gen/ts/shop/product/v1/inventory.js";
import { type Binding, UPDATE_TIME_AFTER } from "../../../kit/db/index.js";
import { errors, Rollback } from "../../../kit/errors.js";
import { readAmount, totalOf } from "../../../kit/money.js";
import { type ProductRow, productNotFound } from "../store.js";
import {
  forgotten,
  HELD,
  type Inventory,
  inLockOrder,
  type LineRow,
  priceOf,
  type ReservationRow,
  readReservation,
  toReservation,
} from "./rows.js";

type PriceRow = Pick<ProductRow, "currency_code" | "price_minor">;

/** What pricedLinesSql gives back for each line it wrote. */
type PricedLine = Pick<LineRow, "line_no" | "currency_code" | "unit_price_minor">;

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
 * Holds every line or none, committed at once with `commit`. A repeat with the same id returns
 * the reservation as it stands; the same id with other lines is ALREADY_EXISTS. Nothing is
 * written when the caller goes away while the reservation waits for its turn (RowTurns).
 */
export async function reserveStock(
  inventory: Inventory,
  reservationId: string,
  lines: { productId: string; quantity: number }[],
  ttlMs: number,
  commit: boolean,
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
  const outcome = await inventory.turns
    .run(
      products,
      () =>
        inventory.sql.transaction(async (trx) => {
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
          if (missing.length > 0) {
            throw new Rollback(missing.map((productId) => ({ productId, available: undefined })));
          }
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
          const short: Short[] = [];
          for (const [i, line] of sorted) {
            const [taken] = await trx.query<PriceRow>(
              "UPDATE products SET stock_quantity = stock_quantity - ?," +
                ` counted_stock = counted_stock - ?, update_time = ${UPDATE_TIME_AFTER}` +
                " WHERE product_id = ? AND stock_quantity >= ? RETURNING currency_code, price_minor",
              [line.quantity, line.quantity, now, now, line.productId, line.quantity],
            );
            if (!taken) {
              // What is left, read before the transaction ends: read after it, a cancel's units
              // returned meanwhile would make the refusal say enough was there.
              const [left] = await trx.query<{ stock_quantity: number }>(
                "SELECT stock_quantity FROM products WHERE product_id = ?",
                [line.productId],
              );
              short.push({ productId: line.productId, available: left?.stock_quantity });
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
            throw new Rollback(short);
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
    .catch(async (error: unknown) => {
      if (!(error instanceof Rollback)) throw error;
      throw shortageError(lines, error.reason);
    });

  if (!outcome.repeat) return outcome.reservation;
  const reservation =
    (await readReservation(inventory.db, reservationId)) ?? forgotten(reservationId);
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

/** A line reserve could not hold: its product's stock then, or undefined for no product. */
interface Short {
  productId: string;
  available: number | undefined;
}

/** NOT_FOUND for an unknown product, else FAILED_PRECONDITION naming every short line. */
function shortageError(lines: { productId: string; quantity: number }[], short: Short[]): Error {
  const missing = short.find((line) => line.available === undefined);
  if (missing) return productNotFound(missing.productId);
  const available = new Map(short.map((line) => [line.productId, line.available]));
  const violations = lines
    .filter((line) => available.has(line.productId))
    .map((line) => ({
      type: "STOCK",
      subject: line.productId,
      description: `requested ${line.quantity}, ${available.get(line.productId)} available`,
    }));
  return errors.failedPrecondition(
    "INSUFFICIENT_STOCK",
    `not enough stock for ${violations.map((v) => v.subject).join(", ")}`,
    { preconditionViolations: violations },
  );
}
