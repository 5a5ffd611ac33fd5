// The order saga's windows, each held open on purpose. CreateOrder writes the order PENDING,
// then takes and commits its stock in one ReserveStock, then confirms it at the reserved prices
// (docs/architecture.md). Each test stops an order between two of those steps, as a crash or a
// slow call would, and checks that whoever finds it next (a retry on another replica, or the
// reconciler) brings it to the one end its stock allows: CONFIRMED with its stock taken once,
// or FAILED with none held, even when a ReserveStock arrives late.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { ReservationState } from "../../gen/ts/shop/product/v1/inventory.js";
import { openDatabase } from "../../kit/db/index.js";
import { newId } from "../../kit/ids.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { migrations } from "../../services/order/migrations/index.js";
import { createOrderService } from "../../services/order/service.js";
import { OrderStore } from "../../services/order/store.js";
import { eventually } from "../helpers/eventually.js";
import { clientsFor, orderLine, start, startFleet, type TestFleet } from "../helpers/fleet.js";
import { freshDatabase, onPostgres, opening } from "../helpers/storage.js";

/** One order database that several order replicas and the test itself open. */
async function sharedOrderDatabase(t: ExecutionContext): Promise<string> {
  if (onPostgres()) return freshDatabase();
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-windows-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, "order.sqlite");
}

/** An order replica on `database`, wired to the fleet's user and product services. */
async function orderReplica(
  t: ExecutionContext,
  fleet: TestFleet,
  database: string,
  settings: { reservationTtlMs?: number; dependencyTimeoutMs?: number } = {},
) {
  const { dependencyTimeoutMs, ...order } = settings;
  const replica = await start(t, createOrderService({ reconcileMs: 100, ...order }), {
    database,
    dependencies: {
      users: fleet.user.server.address,
      inventory: fleet.product.server.address,
    },
    ...(dependencyTimeoutMs && { dependencyTimeoutMs }),
  });
  return clientsFor(t, { order: replica.server.address }).orders;
}

type Orders = Awaited<ReturnType<typeof orderReplica>>;

/** The order store on `database`, where a crashed saga left its order. */
async function storeOn(t: ExecutionContext, database: string) {
  const db = opening(await openDatabase(database, migrations, { schema: "order" }));
  t.teardown(() => db.destroy());
  return new OrderStore({ db: db, reads: db });
}

/** Writes a PENDING order as CreateOrder does first, and stops there, as a crash would. */
async function writtenAndStopped(store: OrderStore, userId: string, productId: string) {
  const orderId = newId("ord");
  const requestId = newId("req");
  await store.insert({
    orderId,
    userId,
    idempotencyKey: requestId,
    reservationId: `order:${orderId}`,
    lines: [{ productId, quantity: 2 }],
  });
  return {
    orderId,
    requestId,
    reservationId: `order:${orderId}`,
    /** The CreateOrder the stopped call was serving, sent again to `orders`. */
    resend: (orders: Orders) =>
      orders.createOrder({ userId, lines: [orderLine(productId, 2)], requestId }),
  };
}

/** The order as it stands once the reconciler of `orders` has moved it to `state`. */
const reconciledTo = (orders: Orders, orderId: string, state: OrderState) =>
  eventually(`the reconciler to move the order to ${OrderState[state]}`, async () => {
    const { order } = await orders.getOrder({ orderId });
    return order?.state === state ? order : undefined;
  });

/**
 * A fleet, and an order of 2 of a product (5 in stock) that a saga wrote to a shared order
 * database and stopped after: after the write, or after taking its stock as well.
 */
async function stoppedAfter(t: ExecutionContext, step: "write" | "stock", amountMinor = "1000") {
  const fleet = await startFleet(t);
  const database = await sharedOrderDatabase(t);
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5, amountMinor });
  const stopped = await writtenAndStopped(
    await storeOn(t, database),
    shopper.userId,
    mug.productId,
  );
  if (step === "stock") {
    await fleet.inventory.reserveStock({
      reservationId: stopped.reservationId,
      lines: [orderLine(mug.productId, 2)],
      commit: true,
    });
  }
  return { fleet, database, mug, stopped };
}

const stockOf = async (fleet: TestFleet, productId: string) =>
  (await fleet.products.getProduct({ productId })).product?.stockQuantity;

test("a retry on another replica while the first call takes the stock waits for it and gets its order", async (t) => {
  const fleet = await startFleet(t);
  const database = await sharedOrderDatabase(t);
  const [first, second] = [
    await orderReplica(t, fleet, database),
    await orderReplica(t, fleet, database),
  ];
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const request = {
    userId: shopper.userId,
    lines: [orderLine(mug.productId, 2)],
    requestId: "twice",
  };

  fleet.product.faults.set("ReserveStock", { delayMs: 700 });
  const original = first.createOrder(request);
  await eventually("the first call to be taking the stock", () =>
    fleet.product.faults.inFault("ReserveStock") > 0 ? true : undefined,
  );
  const retry = await second.createOrder(request);
  const { order } = await original;
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(retry.order?.orderId, order?.orderId);
  t.deepEqual(retry.order?.total, order?.total);
  t.is(await stockOf(fleet, mug.productId), 3);
  const { orders } = await first.listOrders({
    userId: shopper.userId,
    pageSize: 10,
    pageToken: "",
  });
  t.deepEqual(
    orders.map((o) => o.orderId),
    [order?.orderId],
  );
});

test("stopped after the write: the reconciler fails the order, and a late ReserveStock holds nothing", async (t) => {
  const { fleet, database, mug, stopped } = await stoppedAfter(t, "write");
  // The order is left alone while its own call could still be taking the stock: the longer of
  // the reservation TTL and the deadline of that call.
  const orders = await orderReplica(t, fleet, database, {
    reservationTtlMs: 1_000,
    dependencyTimeoutMs: 1_000,
  });
  const failed = await reconciledTo(orders, stopped.orderId, OrderState.ORDER_STATE_FAILED);
  t.is(failed.total, undefined, "it was never priced");
  // The order reads FAILED as its reservation's release goes out: wait for that to be done.
  const db = opening(await openDatabase(database, migrations, { schema: "order" }));
  t.teardown(() => db.destroy());
  await eventually("the reconciler to release the order's reservation", async () =>
    (await db("orders").where({ order_id: stopped.orderId }).first("released"))?.released
      ? true
      : undefined,
  );

  // The ReserveStock the crashed call had sent arrives now: the id is spent.
  const { reservation } = await fleet.inventory.reserveStock({
    reservationId: stopped.reservationId,
    lines: [orderLine(mug.productId, 2)],
    commit: true,
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_RELEASED);
  t.is(await stockOf(fleet, mug.productId), 5);

  // Its request_id is free again: a resend places the order anew.
  const { order } = await stopped.resend(orders);
  t.not(order?.orderId, stopped.orderId);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(fleet, mug.productId), 3);
});

test("stopped after the stock was taken: the reconciler confirms the order at the reserved prices", async (t) => {
  const { fleet, database, mug, stopped } = await stoppedAfter(t, "stock", "1250");
  // A price change after the reservation does not reach the order.
  await fleet.products.updateProduct({
    product: { ...mug, price: { currencyCode: "EUR", amountMinor: "9999" } },
    updateMask: ["price"],
  });

  const orders = await orderReplica(t, fleet, database, { reservationTtlMs: 1_000 });
  const confirmed = await reconciledTo(orders, stopped.orderId, OrderState.ORDER_STATE_CONFIRMED);
  t.deepEqual(confirmed.total, { currencyCode: "EUR", amountMinor: "2500" });
  t.deepEqual(confirmed.lines[0]?.unitPrice, { currencyCode: "EUR", amountMinor: "1250" });
  t.is(await stockOf(fleet, mug.productId), 3);
});

test("stopped after the stock was taken: a resend confirms it at once", async (t) => {
  const { fleet, database, mug, stopped } = await stoppedAfter(t, "stock");
  // The reconciler would wait a minute; the resend does not.
  const orders = await orderReplica(t, fleet, database);
  const { order } = await stopped.resend(orders);
  t.is(order?.orderId, stopped.orderId);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.deepEqual(order?.total, { currencyCode: "EUR", amountMinor: "2000" });
  t.is(await stockOf(fleet, mug.productId), 3);
});

test("stopped after the write: a resend waits out the first call's deadline, then places it anew", async (t) => {
  const fleet = await startFleet(t);
  const database = await sharedOrderDatabase(t);
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const orders = await orderReplica(t, fleet, database, { dependencyTimeoutMs: 800 });
  const store = await storeOn(t, database);
  const written = Date.now();
  const stopped = await writtenAndStopped(store, shopper.userId, mug.productId);

  const { order } = await stopped.resend(orders);
  t.true(Date.now() - written >= 800, "it left the order alone while its call could be alive");
  t.not(order?.orderId, stopped.orderId);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  const { order: first } = await orders.getOrder({ orderId: stopped.orderId });
  t.is(first?.state, OrderState.ORDER_STATE_FAILED);
  t.is(await stockOf(fleet, mug.productId), 3);
});
