// The promises of the order flow, checked against what the services hold: through their rpcs,
// and, for reservations (no rpc lists them), by reading the product database read-only.
import {
  type Order,
  type OrderServiceService,
  OrderState,
} from "../../gen/ts/shop/order/v1/order.js";
import { ReservationState } from "../../gen/ts/shop/product/v1/inventory.js";
import type { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import type { Client } from "../../kit/client/index.js";
import { connectDatabase } from "../../kit/db/index.js";
import type { Ledger } from "./load.js";

export interface World {
  orders: Client<typeof OrderServiceService>;
  products: Client<typeof ProductServiceService>;
  /** The product service's database: its SQLite file or PostgreSQL URL. */
  productDatabase: string;
  /** Stock of each product before any order. */
  initial: Map<string, number>;
}

async function allOrders(orders: World["orders"]): Promise<Order[]> {
  const all: Order[] = [];
  let pageToken = "";
  do {
    const page = await orders.listOrders({ userId: "", pageSize: 1000, pageToken });
    all.push(...page.orders);
    pageToken = page.nextPageToken;
  } while (pageToken);
  return all;
}

/** Reservations by state, and the units held per product, from the product database. */
async function reservations(location: string) {
  const db = connectDatabase(location, { schema: "product" });
  try {
    const states = new Map<string, number>();
    const rows: { reservation_id: string; state: number }[] = await db("reservations").select(
      "reservation_id",
      "state",
    );
    for (const row of rows) states.set(row.reservation_id, row.state);
    const held = new Map<string, number>();
    const units: { product_id: string; units: number }[] = await db("reservations as r")
      .join("reservation_lines as l", "l.reservation_id", "r.reservation_id")
      .where("r.state", ReservationState.RESERVATION_STATE_HELD)
      .groupBy("l.product_id")
      .select("l.product_id")
      .sum({ units: "l.quantity" });
    for (const row of units) held.set(row.product_id, Number(row.units));
    return { states, held };
  } finally {
    await db.destroy();
  }
}

/**
 * Every invariant the fault suite promises, as a list of violations (empty when all hold). Call
 * it once the load has stopped and the reservation TTL plus a reconcile interval have passed.
 */
export async function violations(world: World, ledger: Ledger): Promise<string[]> {
  const found: string[] = [...ledger.badAnswers];
  const orders = await allOrders(world.orders);
  const byId = new Map(orders.map((order) => [order.orderId, order]));
  const { states, held } = await reservations(world.productDatabase);

  // No unfinished work outlives the TTL plus a reconcile interval.
  for (const order of orders) {
    if (order.state === OrderState.ORDER_STATE_PENDING) found.push(`${order.orderId} PENDING`);
    if (order.state === OrderState.ORDER_STATE_CANCELLING) {
      found.push(`${order.orderId} CANCELLING`);
    }
  }
  for (const [productId, units] of held) found.push(`${units} units of ${productId} still HELD`);

  // Initial stock = current stock + units of confirmed orders + units still held.
  for (const [productId, initial] of world.initial) {
    const { product } = await world.products.getProduct({ productId });
    const confirmed = orders
      .filter((order) => order.state === OrderState.ORDER_STATE_CONFIRMED)
      .flatMap((order) => order.lines)
      .filter((line) => line.productId === productId)
      .reduce((sum, line) => sum + line.quantity, 0);
    const stock = product?.stockQuantity ?? Number.NaN;
    const units = held.get(productId) ?? 0;
    if (initial !== stock + confirmed + units) {
      found.push(
        `${productId}: initial ${initial} ≠ stock ${stock} + confirmed ${confirmed} + held ${units}`,
      );
    }
  }

  // Every acknowledged create is CONFIRMED, or CANCELLED after an acknowledged cancel, and a
  // cancelled order's reservation was given back.
  for (const [orderId, placed] of ledger.placed) {
    const state = byId.get(orderId)?.state;
    const expected = placed.cancelled
      ? [OrderState.ORDER_STATE_CANCELLED]
      : placed.cancelAbandoned
        ? [OrderState.ORDER_STATE_CONFIRMED, OrderState.ORDER_STATE_CANCELLED]
        : [OrderState.ORDER_STATE_CONFIRMED];
    if (!expected.includes(state ?? 0)) {
      const names = expected.map((e) => OrderState[e]).join(" or ");
      found.push(`acknowledged ${orderId} is ${OrderState[state ?? 0]}, not ${names}`);
    }
    const reservation = states.get(`order:${orderId}`);
    if (placed.cancelled && reservation !== ReservationState.RESERVATION_STATE_RELEASED) {
      found.push(`cancelled ${orderId}: reservation is ${ReservationState[reservation ?? 0]}`);
    }
  }

  // One order per user and request id.
  const live = orders.filter((order) => order.state !== OrderState.ORDER_STATE_FAILED);
  const requestIds = new Set(live.map((order) => JSON.stringify([order.userId, order.requestId])));
  if (requestIds.size !== live.length) {
    found.push(`${live.length - requestIds.size} request ids have more than one live order`);
  }

  // Calls left without a definitive answer, and answers no call should get.
  const unanswered = ledger.unresolvedCreates.length + ledger.unresolvedCancels.size;
  if (unanswered > 0) found.push(`${unanswered} calls never got a definitive answer`);
  const internal = ledger.tally.count("INTERNAL", "UNKNOWN", "CLIENT_ERROR");
  if (internal > 0) found.push(`${internal} answers were INTERNAL, UNKNOWN or not gRPC at all`);
  return found;
}
