import { type Order, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import {
  inTransaction,
  integerBinding,
  isUniqueViolation,
  type Knex,
  pageBySeq,
  readTime,
  type Sql,
  sqlOf,
  textBytes,
  UPDATE_TIME_AFTER,
  updateTimeAfter,
  valuesOf,
} from "../../kit/db/index.js";
import { errors } from "../../kit/errors.js";
import { moneyOf } from "../../kit/money.js";

interface OrderRow {
  seq: number;
  order_id: string;
  user_id: string;
  /** The proto's request_id: the order's idempotency key. */
  request_id: string;
  /** The idempotency key while the order holds it (unique per user); null once FAILED frees it. */
  request_key: string | null;
  reservation_id: string;
  state: OrderState;
  currency_code: string;
  /** An integer; read with moneyOf (drivers differ in how they return one). */
  total_minor: unknown;
  released: number | boolean;
  /** Milliseconds since the epoch; read with readTime, as every bigint. */
  create_time: number | string;
  update_time: number | string;
  /** When it became CONFIRMED; null if it never did (or an older replica confirmed it). */
  confirm_time: number | string | null;
  /** When it became CANCELLING; null if it never did (or an older replica cancelled it). */
  cancel_time: number | string | null;
  /** Refused by CreateOrder, deleted once released: no read shows it. */
  withdrawn: number | boolean;
  /** Until when a reconciler run holds it (claimForReconcile); null when none does. */
  reconcile_until: number | string | null;
}

interface LineRow {
  order_id: string;
  line_no: number;
  product_id: string;
  quantity: number;
  unit_price_minor: unknown;
}

/** An order as the saga first writes it, PENDING and not yet priced. */
export interface NewOrder {
  orderId: string;
  userId: string;
  /** CreateOrder's request_id, or one the saga made up when the caller gave none. */
  idempotencyKey: string;
  reservationId: string;
  lines: { productId: string; quantity: number }[];
}

/** What an order costs, from its reservation's price snapshot; line prices in line order. */
export interface Prices {
  currencyCode: string;
  totalMinor: bigint;
  unitPricesMinor: bigint[];
}

/** The currency code of an order written before its prices were known. */
const UNPRICED = "";

/** An order plus what only the service needs to know about it. */
export interface StoredOrder {
  order: Order;
  reservationId: string;
  /** When it became CONFIRMED, once it has been (unless an older replica confirmed it). */
  confirmedAt?: Date;
  /** When it became CANCELLING, once it has been. */
  cancellingSince?: Date;
}

/** Another call already wrote an order under this user's idempotency key. */
export class IdempotencyKeyTaken extends Error {}

// An amount that cannot be read exactly (a REAL an older version wrote) is left out of the
// order rather than rounded, and never fails the read of the order or of its neighbours.
const toOrder = (row: OrderRow, lines: LineRow[]): Order => {
  const priced = row.currency_code !== UNPRICED;
  return {
    orderId: row.order_id,
    userId: row.user_id,
    requestId: row.request_id,
    state: row.state,
    total: priced ? moneyOf(row.currency_code, row.total_minor) : undefined,
    lines: lines.map((line) => ({
      productId: line.product_id,
      quantity: line.quantity,
      unitPrice: priced ? moneyOf(row.currency_code, line.unit_price_minor) : undefined,
    })),
    createTime: new Date(readTime(row.create_time)),
    updateTime: new Date(readTime(row.update_time)),
  };
};

/** An order the reconciler must settle (OrderStore.unsettled). */
export interface UnsettledOrder {
  orderId: string;
  reservationId: string;
  state: OrderState;
  withdrawn: boolean;
}

/** No reconciler run holds the order at `now`. */
const unclaimed = (now: number) => (q: Knex.QueryBuilder) =>
  q.whereNull("reconcile_until").orWhere("reconcile_until", "<=", now);

/**
 * The orders the reconciler must settle: failed ones whose reservation may still hold stock,
 * withdrawn ones not yet deleted, cancels not yet finished, and pending ones created before
 * `pendingBefore`, whose saga has had all the time its reservation had.
 */
const unsettledOrders = (pendingBefore: number) => (unsettled: Knex.QueryBuilder) =>
  unsettled
    .where({ state: OrderState.ORDER_STATE_FAILED, released: false })
    // Released but not deleted: by an older replica, or by a run that read the order before its
    // call withdrew it. Written as orders_withdrawn_index's WHERE reads, so that the planner
    // takes the index.
    .orWhere((q) => q.where({ state: OrderState.ORDER_STATE_FAILED }).andWhereRaw("withdrawn"))
    .orWhere({ state: OrderState.ORDER_STATE_CANCELLING })
    .orWhere((q) =>
      q
        .where({ state: OrderState.ORDER_STATE_PENDING })
        .andWhere("create_time", "<", pendingBefore),
    );

/** The orders tables: the only code that touches them. */
export class OrderStore {
  /** CreateOrder's writes, in plain SQL (kit/db/sql.ts). */
  private readonly sql: Sql;
  /** CreateOrder's lookup of an idempotency key, in plain SQL, on `reads`. */
  private readonly lookups: Sql;

  /** The service's database: reads outside a transaction through `reads` (kit/service.ts). */
  constructor(private readonly env: { db: Knex; reads: Knex }) {
    this.sql = sqlOf(env.db);
    this.lookups = sqlOf(env.reads);
  }

  private async withLines(rows: OrderRow[]): Promise<StoredOrder[]> {
    if (rows.length === 0) return [];
    const lines = await this.env
      .reads<LineRow>("order_lines")
      .whereIn(
        "order_id",
        rows.map((row) => row.order_id),
      )
      .orderBy(["order_id", "line_no"]);
    const linesOf = new Map<string, LineRow[]>();
    for (const line of lines) {
      const of = linesOf.get(line.order_id);
      if (of) of.push(line);
      else linesOf.set(line.order_id, [line]);
    }
    return rows.map((row) => ({
      order: toOrder(row, linesOf.get(row.order_id) ?? []),
      reservationId: row.reservation_id,
      ...(row.confirm_time != null && { confirmedAt: new Date(readTime(row.confirm_time)) }),
      ...(row.cancel_time != null && { cancellingSince: new Date(readTime(row.cancel_time)) }),
    }));
  }

  /**
   * Writes a PENDING order without prices; IdempotencyKeyTaken when another call already holds
   * its key.
   */
  async insert(order: NewOrder): Promise<Order> {
    const now = Date.now();
    const row = {
      order_id: order.orderId,
      user_id: order.userId,
      request_id: order.idempotencyKey,
      request_key: order.idempotencyKey,
      reservation_id: order.reservationId,
      state: OrderState.ORDER_STATE_PENDING,
      currency_code: UNPRICED,
      total_minor: 0,
      released: false,
      create_time: now,
      update_time: now,
    };
    const lines = order.lines.map((line, i) => ({
      order_id: order.orderId,
      line_no: i,
      product_id: line.productId,
      quantity: line.quantity,
      unit_price_minor: 0,
    }));
    const values = valuesOf(
      lines.map((line) => [
        line.order_id,
        line.line_no,
        line.product_id,
        line.quantity,
        line.unit_price_minor,
      ]),
    );
    try {
      await this.sql.transaction(async (trx) => {
        await trx.query(
          "INSERT INTO orders (order_id, user_id, request_id, request_key, reservation_id, state," +
            " currency_code, total_minor, released, create_time, update_time)" +
            " VALUES (?, ?, ?, ?, ?, ?, ?, 0, FALSE, ?, ?)",
          [
            row.order_id,
            row.user_id,
            row.request_id,
            row.request_key,
            row.reservation_id,
            row.state,
            row.currency_code,
            row.create_time,
            row.update_time,
          ],
        );
        await trx.query(
          "INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price_minor)" +
            ` VALUES ${values.text}`,
          values.bindings,
        );
      });
    } catch (error) {
      if (isUniqueViolation(error)) throw new IdempotencyKeyTaken(order.idempotencyKey);
      throw error;
    }
    return toOrder(row as OrderRow, lines);
  }

  /**
   * The one order `rows` reads, with its lines. An order's lines are written with it and deleted
   * with it, so a row read without lines was discarded between the two reads: it is read again,
   * and is gone by then.
   */
  private async whole(rows: () => Promise<OrderRow[]>): Promise<StoredOrder | undefined> {
    for (let read = 1; ; read++) {
      const [found] = await this.withLines(await rows());
      if (!found || found.order.lines.length > 0 || read === 3) return found;
    }
  }

  async find(orderId: string): Promise<StoredOrder | undefined> {
    return this.whole(() =>
      this.env.reads<OrderRow>("orders").where({ order_id: orderId, withdrawn: false }),
    );
  }

  async get(orderId: string): Promise<StoredOrder> {
    const found = await this.find(orderId);
    if (!found) {
      throw errors.notFound("ORDER_NOT_FOUND", `order ${orderId} does not exist`, {
        order_id: orderId,
      });
    }
    return found;
  }

  /** The state of each of these orders that exists, for WatchOrder's poll: one query per 500. */
  async states(orderIds: readonly string[]): Promise<Map<string, OrderState>> {
    const states = new Map<string, OrderState>();
    for (let i = 0; i < orderIds.length; i += 500) {
      const rows = await this.env
        .reads<OrderRow>("orders")
        .select("order_id", "state")
        .where({ withdrawn: false })
        .whereIn("order_id", orderIds.slice(i, i + 500));
      for (const row of rows) states.set(row.order_id, row.state);
    }
    return states;
  }

  /** The user's order that holds this idempotency key: any state but FAILED, which frees it. */
  async findByIdempotencyKey(userId: string, key: string): Promise<StoredOrder | undefined> {
    return this.whole(() =>
      this.lookups.query<OrderRow>("SELECT * FROM orders WHERE user_id = ? AND request_key = ?", [
        userId,
        key,
      ]),
    );
  }

  /** Newest first; `beforeSeq` continues a previous page. */
  async list(
    limit: number,
    beforeSeq: number | undefined,
    bytes: number | undefined,
    { userId }: { userId: string },
  ): Promise<{ orders: Order[]; nextSeq?: number }> {
    const query = this.env.reads<OrderRow>("orders").where({ withdrawn: false });
    if (userId) query.where({ user_id: userId });
    const { items, nextSeq } = await pageBySeq(query, limit, {
      from: beforeSeq,
      newestFirst: true,
      // An order has a line at least: one read without any was deleted between the two reads
      // (a refused CreateOrder's discard), and is not listed.
      items: async (rows: OrderRow[]) =>
        (await this.withLines(rows)).map(({ order }) =>
          order.lines.length > 0 ? order : undefined,
        ),
      // An encoded order is about 150 bytes plus 50 per line beyond its product id.
      sizeOf: (order) =>
        textBytes(order.orderId, order.userId, order.requestId) +
        150 +
        order.lines.reduce((sum, line) => sum + textBytes(line.productId) + 50, 0),
      bytes,
    });
    return { orders: items, ...(nextSeq !== undefined && { nextSeq }) };
  }

  /**
   * Moves an order from one of `from` to `to`, its update time `now`; false when it was in
   * another state.
   */
  async transition(
    orderId: string,
    from: OrderState[],
    to: OrderState,
    now = Date.now(),
  ): Promise<boolean> {
    const count = await this.env
      .db("orders")
      .where({ order_id: orderId })
      .whereIn("state", from)
      .update({
        state: to,
        update_time: updateTimeAfter(this.env.db, now),
        ...(to === OrderState.ORDER_STATE_CANCELLING && { cancel_time: now }),
      });
    return count === 1;
  }

  /**
   * PENDING → CONFIRMED with its prices; false when it was not pending. The lines get their prices
   * first, and the order its state and total after, so whoever reads a CONFIRMED order reads its
   * prices. No transaction is needed: every caller writes the same prices, those of the order's
   * one reservation, so the lines may be priced twice or left priced under an order that then
   * fails (whose prices are not shown while it has no currency).
   */
  async confirm(orderId: string, prices: Prices, now = Date.now()): Promise<boolean> {
    // One statement whatever the number of lines; the cast gives PostgreSQL the column's type.
    const cases = prices.unitPricesMinor.map(() => "WHEN ? THEN CAST(? AS BIGINT)").join(" ");
    await this.sql.query(
      `UPDATE order_lines SET unit_price_minor = CASE line_no ${cases} END WHERE order_id = ?`,
      [...prices.unitPricesMinor.flatMap((price, i) => [i, integerBinding(price)]), orderId],
    );
    const confirmed = await this.sql.query(
      "UPDATE orders SET state = ?, currency_code = ?, total_minor = ?," +
        ` update_time = ${UPDATE_TIME_AFTER}, confirm_time = ?` +
        " WHERE order_id = ? AND state = ? RETURNING order_id",
      [
        OrderState.ORDER_STATE_CONFIRMED,
        prices.currencyCode,
        integerBinding(prices.totalMinor),
        now,
        now,
        now,
        orderId,
        OrderState.ORDER_STATE_PENDING,
      ],
    );
    return confirmed.length === 1;
  }

  /**
   * Deletes an order CreateOrder refused: PENDING when nothing was held for it, FAILED once what
   * was held is back. No order was placed. False when it was in another state.
   */
  async discard(orderId: string, state = OrderState.ORDER_STATE_PENDING): Promise<boolean> {
    return inTransaction(this.env.db, async (trx) => {
      // The conditional update takes the row, so no other call can move it before it is gone.
      const taken = await trx("orders")
        .where({ order_id: orderId, state })
        .update({ state: OrderState.ORDER_STATE_FAILED, request_key: null });
      if (taken !== 1) return false;
      await trx("order_lines").where({ order_id: orderId }).delete();
      await trx("orders").where({ order_id: orderId }).delete();
      return true;
    });
  }

  /**
   * PENDING → FAILED, freeing the idempotency key for a retry; `withdrawn`: refused, no read shows
   * it, and it is deleted once released. False when it was not pending.
   */
  async fail(orderId: string, withdrawn = false): Promise<boolean> {
    const count = await this.env
      .db("orders")
      .where({ order_id: orderId, state: OrderState.ORDER_STATE_PENDING })
      .update({
        state: OrderState.ORDER_STATE_FAILED,
        request_key: null,
        update_time: updateTimeAfter(this.env.db, Date.now()),
        ...(withdrawn && { withdrawn: true }),
      });
    return count === 1;
  }

  /** A FAILED order withdrawn, as `fail(orderId, true)` leaves one. False when not FAILED. */
  async withdrawFailed(orderId: string): Promise<boolean> {
    const count = await this.env
      .db("orders")
      .where({ order_id: orderId, state: OrderState.ORDER_STATE_FAILED })
      // Released again, and then deleted, by whichever of this call and the reconciler can.
      .update({ withdrawn: true, released: false });
    return count === 1;
  }

  /** CANCELLING → CANCELLED, its stock given back. False when it was not cancelling. */
  async finishCancel(orderId: string): Promise<boolean> {
    const count = await this.env
      .db("orders")
      .where({ order_id: orderId, state: OrderState.ORDER_STATE_CANCELLING })
      .update({
        state: OrderState.ORDER_STATE_CANCELLED,
        released: true,
        update_time: updateTimeAfter(this.env.db, Date.now()),
      });
    return count === 1;
  }

  async markReleased(orderId: string): Promise<void> {
    await this.env.db("orders").where({ order_id: orderId }).update({ released: true });
  }

  /**
   * Orders the reconciler must settle (unsettledOrders), up to `limit`, but those in `excluding`
   * and those another run holds at `now`.
   */
  async unsettled(
    pendingBefore: number,
    limit: number,
    excluding: readonly string[] = [],
    now = Date.now(),
  ): Promise<UnsettledOrder[]> {
    const query = this.env
      .reads<OrderRow>("orders")
      .where(unclaimed(now))
      .where(unsettledOrders(pendingBefore))
      .select("order_id", "reservation_id", "state", "withdrawn")
      .limit(limit);
    const rows = await (excluding.length > 0 ? query.whereNotIn("order_id", excluding) : query);
    return rows.map((row) => ({
      orderId: row.order_id,
      reservationId: row.reservation_id,
      state: row.state,
      withdrawn: Boolean(row.withdrawn),
    }));
  }

  /**
   * Takes for one reconciler run, until `until`, the orders of `orderIds` that are still
   * unsettled and that no run holds at `now`; returns their ids. Replicas sharing the database
   * then settle each order once, however long after its read another run took and settled it.
   */
  async claimForReconcile(
    orderIds: readonly string[],
    pendingBefore: number,
    now: number,
    until: number,
  ): Promise<Set<string>> {
    if (orderIds.length === 0) return new Set();
    const claimed: Pick<OrderRow, "order_id">[] = await this.env
      .db("orders")
      .whereIn("order_id", orderIds)
      .where(unclaimed(now))
      .where(unsettledOrders(pendingBefore))
      .update({ reconcile_until: until })
      .returning("order_id");
    return new Set(claimed.map((row) => row.order_id));
  }

  /**
   * Lets other runs take these orders again: the run that claimed them until `until` is done
   * with them. An order another run took since, its lease lapsed, stays that run's.
   */
  async unclaim(orderIds: readonly string[], until: number): Promise<void> {
    if (orderIds.length === 0) return;
    await this.env
      .db("orders")
      .whereIn("order_id", orderIds)
      .where({ reconcile_until: until })
      .update({ reconcile_until: null });
  }
}
