// Refused orders: an unknown user or too little stock leaves no order and holds no stock (an
// unanswered reservation leaves it FAILED), a late ReserveStock takes none, a watch ends FAILED,
// not NOT_FOUND; and orders withdrawn after a refusal or after another call failed them: never
// shown, released and deleted by the reconciler, the call placing anew.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import knex from "knex";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import {
  ReservationState,
  type ReserveStockRequest,
} from "../../gen/ts/shop/product/v1/inventory.js";
import { Code, ServiceError } from "../../kit/errors.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { eventually, until } from "../helpers/eventually.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { sampleValue } from "../helpers/metrics.js";
import { onPostgres } from "../helpers/storage.js";
import { failOnceWritten, refusedCreate, stockOf } from "./helpers.js";

test("an unknown user fails the order before any stock is held", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 4 });
  const error = await refusedCreate(t, fleet.orders, "usr_nobody", mug.productId, 1, "");
  t.is(error?.code, Code.NOT_FOUND);
  t.is(error?.details.reason, "USER_NOT_FOUND");
  t.is(await stockOf(fleet, mug.productId), 4);
  // Written beside the GetUser and deleted: counted as withdrawn, as a refusal for stock is.
  const withdrawn = sampleValue(await fleet.order.metrics.text(), "shop_orders_total", {
    outcome: "withdrawn",
  });
  t.is(withdrawn, 1);
  const listed = await fleet.orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
  t.is(listed.orders.length, 0);
});

test("an unknown user is the answer even when its order cannot be deleted at once; the reconciler settles it", async (t) => {
  // Another writer (a second replica, say) holds the order's rows past a statement's wait for
  // them, just as GetUser answers: deleting the written order fails.
  const file = onPostgres()
    ? undefined
    : path.join(await mkdtemp(path.join(tmpdir(), "shopmesh-")), "order.sqlite");
  if (file) t.teardown(() => rm(path.dirname(file), { recursive: true, force: true }));
  const fleet = await startFleet(t, {
    order: { reservationTtlMs: 1_000 },
    ...(file && { databases: { order: file } }),
  });
  const writer = file
    ? knex({ client: "better-sqlite3", connection: { filename: file }, useNullAsDefault: true })
    : fleet.order.db;
  if (file) t.teardown(() => writer.destroy());
  const mug = await addProduct(fleet.products, { stock: 4 });
  fleet.user.faults.set("GetUser", { delayMs: 500 });
  const refused = refusedCreate(t, fleet.orders, "usr_nobody", mug.productId, 1, "held");
  await until("the order to be written", async () => (await writer("orders")).length === 1);
  const holding = writer.transaction(async (trx) => {
    await trx("orders").update({ update_time: trx.ref("update_time") });
    // PostgreSQL ends a session left idle in a transaction, so it waits in a statement there.
    if (file) await sleep(6_000);
    else await trx.raw("SET LOCAL statement_timeout = 0; SELECT pg_sleep(6)");
  });
  const error = await refused;
  await holding;
  t.is(error?.code, Code.NOT_FOUND);
  t.is(error?.details.reason, "USER_NOT_FOUND");
  // Left PENDING, it is failed as one a crash interrupted before its stock was taken.
  await until("the reconciler to fail the order", async () => {
    const { orders } = await fleet.orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
    return orders.length === 1 && orders[0]?.state === OrderState.ORDER_STATE_FAILED;
  });
  t.is(await stockOf(fleet, mug.productId), 4);
});

test("a refused reservation leaves no order behind; an unanswered one leaves it FAILED", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const list = async () =>
    (await fleet.orders.listOrders({ userId: user.userId, pageSize: 10, pageToken: "" })).orders;

  const short = await refusedCreate(t, fleet.orders, user.userId, mug.productId, 6, "too-many");
  t.is(short?.details.reason, "INSUFFICIENT_STOCK");
  t.deepEqual(await list(), []);

  fleet.product.faults.set("ReserveStock", { code: Code.UNAVAILABLE });
  const error = await refusedCreate(t, fleet.orders, user.userId, mug.productId, 1, "r");
  t.is(error?.code, Code.UNAVAILABLE);
  t.deepEqual(
    (await list()).map((order) => order.state),
    [OrderState.ORDER_STATE_FAILED],
  );
  t.is(await stockOf(fleet, mug.productId), 5);
});

test("a ReserveStock that reaches product after its order was refused takes no stock", async (t) => {
  // A first attempt the client resent (its connection dropped, its replica paused) may still
  // run after the resend was refused and the order deleted; this replays it then.
  const sent: ReserveStockRequest[] = [];
  const recording: ServerMiddleware = {
    name: "record ReserveStock",
    wrap: (method, next) =>
      method.rpc === "ReserveStock"
        ? (request, ctx) => {
            sent.push(request as ReserveStockRequest);
            return next(request, ctx);
          }
        : next,
  };
  const fleet = await startFleet(t, { middleware: { product: [recording] } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const short = await refusedCreate(t, fleet.orders, user.userId, mug.productId, 6, "too-many");
  t.is(short?.details.reason, "INSUFFICIENT_STOCK");
  const [late] = sent;
  if (!late) return t.fail("the order service sent no ReserveStock");

  await fleet.products.updateProduct({
    product: { productId: mug.productId, stockQuantity: 10 },
    updateMask: ["stock_quantity"],
  });
  const { reservation } = await fleet.inventory.reserveStock(late);
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_RELEASED);
  t.is(await stockOf(fleet, mug.productId), 10);
  const { orders } = await fleet.orders.listOrders({ userId: user.userId, pageSize: 10 });
  t.deepEqual(orders, []);
});

test("a watch of an order that CreateOrder then refuses ends with FAILED, not NOT_FOUND", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  // Each refusal comes a second in, while the order is PENDING for anyone to see and watch: the
  // product's (the order fails, then is deleted) and an unknown user's (deleted at once, which a
  // watch learns only by polling).
  const refusals = [
    { userId: user.userId, rpc: "ReserveStock", code: Code.FAILED_PRECONDITION },
    { userId: "usr_nobody", rpc: "GetUser", code: Code.NOT_FOUND },
  ] as const;
  for (const { userId, rpc, code } of refusals) {
    const faults = rpc === "GetUser" ? fleet.user.faults : fleet.product.faults;
    faults.set(rpc, { delayMs: 1_000, ...(rpc === "ReserveStock" && { code }) });
    const placing = t.throwsAsync(
      fleet.orders.createOrder({
        userId,
        lines: [orderLine(mug.productId, 1)],
        requestId: `refused-while-watched-${rpc}`,
      }),
    );
    const pending = await eventually("the PENDING order", async () => {
      const { orders } = await fleet.orders.listOrders({ userId: "", pageSize: 10 });
      return orders[0];
    });
    const states: OrderState[] = [];
    for await (const { order } of fleet.orders.watchOrder({ orderId: pending.orderId })) {
      if (order) states.push(order.state);
    }
    t.deepEqual(states, [OrderState.ORDER_STATE_PENDING, OrderState.ORDER_STATE_FAILED], rpc);
    t.is(((await placing) as ServiceError | undefined)?.code, code, rpc);
    const { orders } = await fleet.orders.listOrders({ userId: "", pageSize: 10 });
    t.deepEqual(orders, [], `${rpc}: no order was placed`);
    faults.clear();
  }
});

test("a refused order whose release cannot reach product is never shown, and is deleted once released", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  fleet.product.faults.set("ReleaseReservation", { code: Code.UNAVAILABLE });
  const short = await refusedCreate(t, fleet.orders, user.userId, mug.productId, 6, "too-many");
  t.is(short?.details.reason, "INSUFFICIENT_STOCK");

  // The row waits for its release, and no read shows it: no order was placed.
  const rows = () => fleet.order.db("orders").select("order_id", "state");
  const [row] = await rows();
  t.is(row?.state, OrderState.ORDER_STATE_FAILED);
  const orderId = String(row?.order_id);
  const listed = await fleet.orders.listOrders({
    userId: user.userId,
    pageSize: 10,
    pageToken: "",
  });
  t.deepEqual(listed.orders, []);
  const admin = await fleet.orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
  t.deepEqual(admin.orders, []);
  const read = await t.throwsAsync(fleet.orders.getOrder({ orderId }), {
    instanceOf: ServiceError,
  });
  t.is(read?.details.reason, "ORDER_NOT_FOUND");
  const watching = (async () => {
    for await (const _ of fleet.orders.watchOrder({ orderId })) t.fail("a message of a watch");
  })();
  const watch = await t.throwsAsync(watching, { instanceOf: ServiceError });
  t.is(watch?.details.reason, "ORDER_NOT_FOUND");

  // Product is back: the reconciler releases the reservation, leaving its tombstone, and deletes
  // the order.
  fleet.product.faults.clear();
  await until("the order to be deleted", async () => (await rows()).length === 0);
  const { reservation } = await fleet.inventory.releaseReservation({
    reservationId: `order:${orderId}`,
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_RELEASED);
  t.is(await stockOf(fleet, mug.productId), 5);
});

test("a withdrawn order released without being deleted, as an older replica does, is deleted", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  fleet.product.faults.set("ReleaseReservation", { code: Code.UNAVAILABLE });
  await refusedCreate(t, fleet.orders, user.userId, mug.productId, 6, "released-elsewhere");
  const rows = () => fleet.order.db("orders").select("order_id");
  const [row] = await rows();
  // An older replica's reconciler knows nothing of withdrawn: it releases the order and marks
  // it so, where this version deletes it.
  await fleet.order.db("orders").where({ order_id: row?.order_id }).update({ released: true });
  // A reconcile run that read the order before that has had its release refused meanwhile.
  await sleep(600);
  fleet.product.faults.clear();
  await until("the order to be deleted", async () => (await rows()).length === 0);
  t.is(await stockOf(fleet, mug.productId), 5);
});

test("a refused CreateOrder whose order another call failed meanwhile leaves none shown", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 1 });
  // The refusal comes late; meanwhile a resend on another replica finds the order not yet
  // reserving, and fails it, as settle() does.
  fleet.product.faults.set("ReserveStock", { delayMs: 500 });
  const placing = fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 5)],
    requestId: "late-refusal",
  });
  const rows = () => fleet.order.db("orders").select("order_id", "state");
  await failOnceWritten(t, fleet.order.db);

  const refused = await t.throwsAsync(placing, { instanceOf: ServiceError });
  t.is(refused?.details.reason, "INSUFFICIENT_STOCK");
  const listed = await fleet.orders.listOrders({ userId: user.userId, pageSize: 10 });
  t.deepEqual(listed.orders, []);
  await until("the order to be deleted", async () => (await rows()).length === 0);
  t.is(await stockOf(fleet, mug.productId), 1);
});

test("an order another call failed after its stock was taken is withdrawn, and the call places it again", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  // A resend on another replica fails the order while this call's ReserveStock is on its way,
  // and its release lands after that reservation took all the stock.
  fleet.product.faults.set("ReserveStock", { delayMs: 500 });
  fleet.product.faults.set("ReleaseReservation", { delayMs: 1_500 });
  const placing = fleet.orders.createOrder(
    { userId: user.userId, lines: [orderLine(mug.productId, 5)], requestId: "failed-under-it" },
    { timeoutMs: 10_000 },
  );
  const rows = () => fleet.order.db("orders").select("order_id");
  const first = await failOnceWritten(t, fleet.order.db);

  // Not refused for the stock its own failed order held: that order is withdrawn and released.
  const { order: placed } = await placing;
  t.is(placed?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.not(placed?.orderId, first);
  const listed = await fleet.orders.listOrders({ userId: user.userId, pageSize: 10 });
  t.deepEqual(
    listed.orders.map((order) => order.orderId),
    [placed?.orderId],
  );
  await until("the failed order to be deleted", async () => (await rows()).length === 1);
  t.is(await stockOf(fleet, mug.productId), 0);
});
