import { type Order, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { isUniqueViolation, type Knex } from "../../kit/db.js";
import { errors } from "../../kit/errors.js";

interface OrderRow {
  seq: number;
  order_id: string;
  user_id: string;
  request_id: string;
  request_key: string | null;
  reservation_id: string;
  state: OrderState;
  currency_code: string;
  total_minor: number;
  released: number | boolean;
  create_time: number;
  update_time: number;
}

interface LineRow {
  order_id: string;
  line_no: number;
  product_id: string;
  quantity: number;
  unit_price_minor: number;
}

/** An order as the saga writes it. */
export interface NewOrder {
  orderId: string;
  userId: string;
  requestId: string;
  reservationId: string;
  currencyCode: string;
  totalMinor: bigint;
  lines: { productId: string; quantity: number; unitPriceMinor: bigint }[];
}

/** An order plus what only the service needs to know about it. */
export interface StoredOrder {
  order: Order;
  reservationId: string;
}

export class RequestIdTaken extends Error {}

const toOrder = (row: OrderRow, lines: LineRow[]): Order => ({
  orderId: row.order_id,
  userId: row.user_id,
  requestId: row.request_id,
  state: row.state,
  total: { currencyCode: row.currency_code, amountMinor: String(row.total_minor) },
  lines: lines.map((line) => ({
    productId: line.product_id,
    quantity: line.quantity,
    unitPrice: { currencyCode: row.currency_code, amountMinor: String(line.unit_price_minor) },
  })),
  createTime: new Date(row.create_time),
  updateTime: new Date(row.update_time),
});

/** The orders tables: the only code that touches them. */
export class OrderStore {
  constructor(private readonly db: Knex) {}

  private async withLines(rows: OrderRow[]): Promise<StoredOrder[]> {
    if (rows.length === 0) return [];
    const lines = await this.db<LineRow>("order_lines")
      .whereIn(
        "order_id",
        rows.map((row) => row.order_id),
      )
      .orderBy(["order_id", "line_no"]);
    return rows.map((row) => ({
      order: toOrder(
        row,
        lines.filter((line) => line.order_id === row.order_id),
      ),
      reservationId: row.reservation_id,
    }));
  }

  /** Writes a PENDING order; RequestIdTaken when another call already wrote this request id. */
  async insert(order: NewOrder): Promise<Order> {
    const now = Date.now();
    const row = {
      order_id: order.orderId,
      user_id: order.userId,
      request_id: order.requestId,
      request_key: order.requestId,
      reservation_id: order.reservationId,
      state: OrderState.ORDER_STATE_PENDING,
      currency_code: order.currencyCode,
      total_minor: Number(order.totalMinor),
      released: false,
      create_time: now,
      update_time: now,
    };
    const lines = order.lines.map((line, i) => ({
      order_id: order.orderId,
      line_no: i,
      product_id: line.productId,
      quantity: line.quantity,
      unit_price_minor: Number(line.unitPriceMinor),
    }));
    try {
      await this.db.transaction(async (trx) => {
        await trx("orders").insert(row);
        await trx("order_lines").insert(lines);
      });
    } catch (error) {
      if (isUniqueViolation(error)) throw new RequestIdTaken(order.requestId);
      throw error;
    }
    return toOrder(row as OrderRow, lines);
  }

  async find(orderId: string): Promise<StoredOrder | undefined> {
    const rows = await this.db<OrderRow>("orders").where({ order_id: orderId });
    return (await this.withLines(rows))[0];
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

  async findByRequestId(requestId: string): Promise<Order | undefined> {
    const rows = await this.db<OrderRow>("orders").where({ request_key: requestId });
    return (await this.withLines(rows))[0]?.order;
  }

  /** Newest first; `beforeSeq` continues a previous page. */
  async list(
    limit: number,
    beforeSeq: number | undefined,
    userId: string,
  ): Promise<{ orders: Order[]; nextSeq?: number }> {
    const query = this.db<OrderRow>("orders");
    if (beforeSeq !== undefined) query.where("seq", "<", beforeSeq);
    if (userId) query.andWhere({ user_id: userId });
    const rows = await query.orderBy("seq", "desc").limit(limit + 1);
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    const orders = (await this.withLines(page)).map((stored) => stored.order);
    return { orders, ...(rows.length > limit && last && { nextSeq: last.seq }) };
  }

  /** Moves an order from one of `from` to `to`; false when it was in another state. */
  async transition(orderId: string, from: OrderState[], to: OrderState): Promise<boolean> {
    const count = await this.db("orders")
      .where({ order_id: orderId })
      .whereIn("state", from)
      .update({ state: to, update_time: Date.now() });
    return count === 1;
  }

  /** PENDING → FAILED, freeing the request id for a retry. False when it was not pending. */
  async fail(orderId: string): Promise<boolean> {
    const count = await this.db("orders")
      .where({ order_id: orderId, state: OrderState.ORDER_STATE_PENDING })
      .update({ state: OrderState.ORDER_STATE_FAILED, request_key: null, update_time: Date.now() });
    return count === 1;
  }

  async markReleased(orderId: string): Promise<void> {
    await this.db("orders").where({ order_id: orderId }).update({ released: true });
  }

  /**
   * Orders whose reservation may still hold stock: failed ones not yet released, and pending
   * ones older than `staleBefore` (their saga died between writing and committing).
   */
  async needingRelease(
    staleBefore: number,
  ): Promise<{ orderId: string; reservationId: string; state: OrderState }[]> {
    const rows = await this.db<OrderRow>("orders")
      .where({ state: OrderState.ORDER_STATE_FAILED, released: false })
      .orWhere((q) =>
        q
          .where({ state: OrderState.ORDER_STATE_PENDING })
          .andWhere("create_time", "<", staleBefore),
      )
      .limit(100);
    return rows.map((row) => ({
      orderId: row.order_id,
      reservationId: row.reservation_id,
      state: row.state,
    }));
  }
}
