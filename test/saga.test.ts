import { connect } from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import { credentials, Metadata } from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { HealthCheckResponse_ServingStatus, HealthService } from "../gen/ts/health/v1/health.js";
import {
  CreateOrderRequest,
  type CreateOrderResponse,
  OrderServiceClient,
  OrderState,
} from "../gen/ts/shop/order/v1/order.js";
import { ReservationState, type ReserveStockRequest } from "../gen/ts/shop/product/v1/inventory.js";
import { createClient } from "../kit/client/index.js";
import type { Knex } from "../kit/db/index.js";
import { Code, decodeStatus, ServiceError } from "../kit/errors.js";
import type { ServerMiddleware } from "../kit/middleware/index.js";
import { addProduct, addUser } from "../scripts/lib/seed.js";
import { createOrderService } from "../services/order/service.js";
import { userService } from "../services/user/service.js";
import { tokenFor } from "./helpers/credentials.js";
import { eventually, until } from "./helpers/eventually.js";
import {
  captureLogger,
  clientsFor,
  orderLine,
  start,
  startFleet,
  startProcessFleet,
} from "./helpers/fleet.js";
import { grpcFrame, rawGrpcCall } from "./helpers/grpc-frame.js";

/** A CreateOrder of `quantity` of one product that must fail: its ServiceError. */
const refusedCreate = (
  t: ExecutionContext,
  orders: ReturnType<typeof clientsFor>["orders"],
  userId: string,
  productId: string,
  quantity: number,
  requestId: string,
) =>
  t.throwsAsync(
    orders.createOrder({ userId, lines: [orderLine(productId, quantity)], requestId }),
    {
      instanceOf: ServiceError,
    },
  );

/**
 * What a resend on another replica does to an order it finds not yet reserving (settle()): fails
 * it, freeing its key. Waits for the one order to be written first; returns its id.
 */
async function failOnceWritten(t: ExecutionContext, db: Knex): Promise<string> {
  const rows = () => db("orders").select("order_id");
  await until("the order to be written", async () => (await rows()).length === 1);
  const [row] = await rows();
  const failed = { state: OrderState.ORDER_STATE_FAILED, request_key: null };
  t.is(await db("orders").where({ order_id: row?.order_id }).update(failed), 1);
  return String(row?.order_id);
}

const stockOf = async (
  fleet: { products: ReturnType<typeof clientsFor>["products"] },
  id: string,
) => (await fleet.products.getProduct({ productId: id })).product?.stockQuantity;

test("an order is confirmed at the reserved price and takes the stock", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5, amountMinor: "1250" });
  const kettle = await addProduct(fleet.products, { stock: 2, amountMinor: "4900" });

  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 2), orderLine(kettle.productId, 1)],
    requestId: "happy-1",
  });
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.deepEqual(order?.total, { currencyCode: "EUR", amountMinor: "7400" });
  t.deepEqual(
    order?.lines.map((line) => [line.productId, line.quantity, line.unitPrice?.amountMinor]),
    [
      [mug.productId, 2, "1250"],
      [kettle.productId, 1, "4900"],
    ],
  );
  t.is(await stockOf(fleet, mug.productId), 3);
  t.is(await stockOf(fleet, kettle.productId), 1);

  // A later price change does not touch the order's snapshot.
  await fleet.products.updateProduct({
    product: { ...mug, price: { currencyCode: "EUR", amountMinor: "9999" } },
    updateMask: ["price"],
  });
  const again = await fleet.orders.getOrder({ orderId: order?.orderId ?? "" });
  t.is(again.order?.lines[0]?.unitPrice?.amountMinor, "1250");
});

test("the generated grpc-js client class talks to the order service as is", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products);
  const client = new OrderServiceClient(fleet.order.server.address, credentials.createInsecure());
  t.teardown(() => client.close());
  const metadata = new Metadata();
  metadata.set("authorization", `Bearer ${await tokenFor(user.userId)}`);
  const response = await new Promise<CreateOrderResponse>((resolve, reject) =>
    client.createOrder(
      {
        userId: user.userId,
        lines: [{ productId: mug.productId, quantity: 1, unitPrice: undefined }],
        requestId: "generated-1",
      },
      metadata,
      (error, reply) => (error ? reject(error) : resolve(reply)),
    ),
  );
  t.is(response.order?.state, OrderState.ORDER_STATE_CONFIRMED);
});

test("ten concurrent retries of one request_id create one order", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 20 });
  const request = {
    userId: user.userId,
    lines: [orderLine(mug.productId, 3)],
    requestId: "retry-me",
  };

  const results = await Promise.all(
    Array.from({ length: 10 }, () => fleet.orders.createOrder(request)),
  );
  const ids = new Set(results.map((result) => result.order?.orderId));
  t.is(ids.size, 1);
  const listed = await fleet.orders.listOrders({
    userId: user.userId,
    pageSize: 50,
    pageToken: "",
  });
  t.is(listed.orders.length, 1);
  t.is(await stockOf(fleet, mug.productId), 17);

  // And once more after the fact, and with other lines under the same id.
  const later = await fleet.orders.createOrder(request);
  t.true(ids.has(later.order?.orderId));
  const reused = await t.throwsAsync(
    fleet.orders.createOrder({ ...request, lines: [orderLine(mug.productId, 1)] }),
    { instanceOf: ServiceError },
  );
  t.is(reused?.code, Code.ALREADY_EXISTS);
  t.is(reused?.details.reason, "REQUEST_ID_REUSED");
  t.true(ids.has(reused?.details.metadata?.order_id));
});

test("a retry that lists the same lines in another order answers with the order, alone and at once", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const [mug, cup] = await Promise.all([
    addProduct(fleet.products, { stock: 10 }),
    addProduct(fleet.products, { stock: 10 }),
  ]);
  const lines = [orderLine(mug.productId, 1), orderLine(cup.productId, 2)];
  const request = (ordered: typeof lines, requestId: string) => ({
    userId: user.userId,
    lines: ordered,
    requestId,
  });

  const { order } = await fleet.orders.createOrder(request(lines, "cart-1"));
  const again = await fleet.orders.createOrder(request([...lines].reverse(), "cart-1"));
  t.is(again.order?.orderId, order?.orderId);

  // Concurrent: one run placing, the other joining it or settling its order.
  const both = await Promise.all([
    fleet.orders.createOrder(request(lines, "cart-2")),
    fleet.orders.createOrder(request([...lines].reverse(), "cart-2")),
  ]);
  t.is(both[0].order?.orderId, both[1].order?.orderId);
  t.is(await stockOf(fleet, mug.productId), 8);
  t.is(await stockOf(fleet, cup.productId), 6);

  // Another quantity is another order.
  const reused = await t.throwsAsync(
    fleet.orders.createOrder(
      request([orderLine(cup.productId, 1), orderLine(mug.productId, 1)], "cart-1"),
    ),
    { instanceOf: ServiceError },
  );
  t.is(reused?.details.reason, "REQUEST_ID_REUSED");
});

test("one request_id from two users places two orders, and neither answer names the other's", async (t) => {
  const fleet = await startFleet(t);
  const [alice, bob] = await Promise.all([addUser(fleet.users), addUser(fleet.users)]);
  const mug = await addProduct(fleet.products, { stock: 20 });
  const asAlice = { userId: alice.userId, lines: [orderLine(mug.productId, 2)], requestId: "up-1" };
  const asBob = { userId: bob.userId, lines: [orderLine(mug.productId, 3)], requestId: "up-1" };

  const { order: first } = await fleet.orders.createOrder(asAlice);
  const { order: second } = await fleet.orders.createOrder(asBob);
  t.like(first, { userId: alice.userId, state: OrderState.ORDER_STATE_CONFIRMED });
  t.like(second, { userId: bob.userId, state: OrderState.ORDER_STATE_CONFIRMED });
  t.not(first?.orderId, second?.orderId);

  // Each replay answers with its own user's order, and takes no more stock.
  t.is((await fleet.orders.createOrder(asBob)).order?.orderId, second?.orderId);
  t.is((await fleet.orders.createOrder(asAlice)).order?.orderId, first?.orderId);
  t.is(await stockOf(fleet, mug.productId), 15);

  // A key reused with another body names only the user's own order.
  const reused = await t.throwsAsync(
    fleet.orders.createOrder({ ...asBob, lines: [orderLine(mug.productId, 1)] }),
    { instanceOf: ServiceError },
  );
  t.is(reused?.details.reason, "REQUEST_ID_REUSED");
  t.is(reused?.details.metadata?.order_id, second?.orderId);
  t.false(reused?.message.includes(first?.orderId ?? ""));
  for (const user of [alice, bob]) {
    const { orders } = await fleet.orders.listOrders({
      userId: user.userId,
      pageSize: 10,
      pageToken: "",
    });
    t.deepEqual(
      orders.map((order) => order.orderId),
      [user === alice ? first?.orderId : second?.orderId],
    );
  }
});

test("two users' concurrent retries of one request_id make one order each", async (t) => {
  const fleet = await startFleet(t);
  const [alice, bob] = await Promise.all([addUser(fleet.users), addUser(fleet.users)]);
  const mug = await addProduct(fleet.products, { stock: 20 });
  const requests = [alice, bob].map((user, i) => ({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1 + i)],
    requestId: "retry-us",
  }));

  // Interleaved, so that each user's calls meet the other's in flight.
  const results = await Promise.all(
    Array.from({ length: 10 }, () =>
      requests.map((request) => fleet.orders.createOrder(request)),
    ).flat(),
  );
  const byUser = new Map<string, Set<string>>();
  for (const { order } of results) {
    const ids = byUser.get(order?.userId ?? "") ?? new Set();
    byUser.set(order?.userId ?? "", ids.add(order?.orderId ?? ""));
  }
  t.deepEqual([...byUser.keys()].sort(), [alice.userId, bob.userId].sort());
  t.is(byUser.get(alice.userId)?.size, 1);
  t.is(byUser.get(bob.userId)?.size, 1);
  t.is(await stockOf(fleet, mug.productId), 17);
});

test("two bodies under one request_id at once: each call gets its own body's answer", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const [mug, cup] = await Promise.all([
    addProduct(fleet.products, { stock: 5 }),
    addProduct(fleet.products, { stock: 20 }),
  ]);
  const outcomes = await Promise.all(
    Array.from({ length: 10 }, async (_, i) => {
      const requestId = `two-bodies-${i}`;
      const [tooMany, fine] = await Promise.allSettled([
        fleet.orders.createOrder({
          userId: user.userId,
          lines: [orderLine(mug.productId, 50)],
          requestId,
        }),
        fleet.orders.createOrder({
          userId: user.userId,
          lines: [orderLine(cup.productId, 1)],
          requestId,
        }),
      ]);
      return { tooMany, fine };
    }),
  );
  for (const { tooMany, fine } of outcomes) {
    // The one body that can be placed is, whichever ran first; the other is refused for its own
    // lines, or finds the key taken by the placed order.
    t.is(fine.status, "fulfilled", fine.status === "rejected" ? String(fine.reason) : "");
    const refused = tooMany.status === "rejected" ? (tooMany.reason as ServiceError) : undefined;
    t.true(
      refused?.details.reason === "INSUFFICIENT_STOCK" ||
        refused?.details.reason === "REQUEST_ID_REUSED",
      String(refused),
    );
  }
  t.is(await stockOf(fleet, cup.productId), 10);
  t.is(await stockOf(fleet, mug.productId), 5);
});

test("50 parallel orders for 10 units: exactly 10 succeed and stock never goes below 0", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 10 });

  let lowest = 10;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      lowest = Math.min(lowest, (await stockOf(fleet, mug.productId)) ?? -1);
    }
  })();
  const outcomes = await Promise.allSettled(
    Array.from({ length: 50 }, (_, i) =>
      fleet.orders.createOrder({
        userId: user.userId,
        lines: [orderLine(mug.productId, 1)],
        requestId: `rush-${i}`,
      }),
    ),
  );
  polling = false;
  await poller;

  const won = outcomes.filter((outcome) => outcome.status === "fulfilled");
  const lost = outcomes.flatMap((outcome) =>
    outcome.status === "rejected" ? [outcome.reason] : [],
  );
  t.is(won.length, 10);
  t.is(lost.length, 40);
  for (const error of lost) {
    t.is(error.code, Code.FAILED_PRECONDITION);
    t.is(error.details.reason, "INSUFFICIENT_STOCK");
    t.is(error.details.preconditionViolations?.[0]?.subject, mug.productId);
  }
  t.is(await stockOf(fleet, mug.productId), 0);
  t.true(lowest >= 0);
});

test("an unknown user fails the order before any stock is held", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 4 });
  const error = await refusedCreate(t, fleet.orders, "usr_nobody", mug.productId, 1, "");
  t.is(error?.code, Code.NOT_FOUND);
  t.is(error?.details.reason, "USER_NOT_FOUND");
  t.is(await stockOf(fleet, mug.productId), 4);
  const listed = await fleet.orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
  t.is(listed.orders.length, 0);
});

test("an unreachable user service leaves no order, and the same request_id places it once the user answers", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 3 });
  const request = { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: "u-1" };
  const list = async () =>
    (await fleet.orders.listOrders({ userId: user.userId, pageSize: 10, pageToken: "" })).orders;

  fleet.user.faults.set("GetUser", { code: Code.UNAVAILABLE });
  const error = await t.throwsAsync(fleet.orders.createOrder(request), {
    instanceOf: ServiceError,
  });
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(error?.details.metadata?.dependency, "user");
  // The order was written while the user was checked; it is gone, and its key with it.
  t.deepEqual(await list(), []);
  t.is(await stockOf(fleet, mug.productId), 3);

  fleet.user.faults.clear();
  const { order } = await fleet.orders.createOrder(request);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.deepEqual(
    (await list()).map(({ orderId }) => orderId),
    [order?.orderId],
  );
  t.is(await stockOf(fleet, mug.productId), 2);
});

test("a reservation whose reply is lost fails the order, gives the stock back, and a retry succeeds", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  // The product service takes and commits the stock, then the answer never arrives.
  fleet.product.faults.set("ReserveStock", { code: Code.UNAVAILABLE, afterHandler: true });

  const request = {
    userId: user.userId,
    lines: [orderLine(mug.productId, 2)],
    requestId: "flaky-1",
  };
  const error = await t.throwsAsync(fleet.orders.createOrder(request), {
    instanceOf: ServiceError,
  });
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(error?.details.reason, "DEPENDENCY_UNAVAILABLE");
  t.regex(error?.message ?? "", /product service is unavailable/);
  t.is(await stockOf(fleet, mug.productId), 5);
  const failed = await fleet.orders.listOrders({
    userId: user.userId,
    pageSize: 10,
    pageToken: "",
  });
  t.deepEqual(
    failed.orders.map((order) => order.state),
    [OrderState.ORDER_STATE_FAILED],
  );
  const { reservation } = await fleet.inventory.releaseReservation({
    reservationId: `order:${failed.orders[0]?.orderId}`,
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_RELEASED);

  fleet.product.faults.clear();
  const { order } = await fleet.orders.createOrder(request);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(fleet, mug.productId), 3);
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

test("a held reservation expires after its TTL and gives its stock back", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const { reservation } = await fleet.inventory.reserveStock({
    reservationId: "expiring-1",
    lines: [orderLine(mug.productId, 4)],
    ttl: { seconds: "1", nanos: 0 },
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_HELD);
  t.is(await stockOf(fleet, mug.productId), 1);

  await until("the expired reservation to give its stock back", async () => {
    return (await stockOf(fleet, mug.productId)) === 5;
  });
  const error = await t.throwsAsync(
    fleet.inventory.commitReservation({ reservationId: "expiring-1" }),
    {
      instanceOf: ServiceError,
    },
  );
  t.is(error?.code, Code.FAILED_PRECONDITION);
  t.is(error?.details.reason, "RESERVATION_NOT_HELD");
});

test("against a product service older than commit-on-reserve, orders are committed as before", async (t) => {
  // The TTL leaves a loaded machine time to place the first order on PostgreSQL; at 1 s, one
  // CI run's took longer.
  const fleet = await startFleet(t, { order: { reservationTtlMs: 3_000 } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 3 });
  // An older product service does not know ReserveStockRequest.commit: it only holds the stock.
  const older = (request: ReserveStockRequest) => ({ ...request, commit: false });
  fleet.product.faults.set("ReserveStock", { rewrite: older });
  const placed = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "upgrade-1",
  });
  t.is(placed.order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(placed.order?.total?.amountMinor, "1000");
  const { reservation } = await fleet.inventory.commitReservation({
    reservationId: `order:${placed.order?.orderId}`,
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_COMMITTED);

  // The hold outlives its TTL before the commit: the order fails, keeps no stock, may be resent.
  fleet.product.faults.set("CommitReservation", { delayMs: 3_500 });
  const request = {
    userId: user.userId,
    lines: [orderLine(mug.productId, 2)],
    requestId: "slow",
  };
  const error = await t.throwsAsync(fleet.orders.createOrder(request), {
    instanceOf: ServiceError,
  });
  // The service's slowness, not the caller's mistake: a retryable status that says so.
  t.is(error?.code, Code.ABORTED);
  t.is(error?.details.reason, "RESERVATION_EXPIRED");
  t.is(error?.details.metadata?.request_id, "slow");
  t.is(await stockOf(fleet, mug.productId), 2);

  fleet.product.faults.clear();
  const { order } = await fleet.orders.createOrder(request);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(fleet, mug.productId), 0);
});

test("a GetUser unanswered after half a second is sent again beside it, and the order is placed once", async (t) => {
  const logs = { user: captureLogger("user") };
  const fleet = await startFleet(t, { loggers: { user: logs.user.logger } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 4 });
  // Every GetUser takes 0.8 s: the order service's client sends a second attempt at 0.5 s (to
  // the same server here, its only replica), and the first answer wins.
  fleet.user.faults.set("GetUser", { delayMs: 800 });
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "slow-user",
  });
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(fleet, mug.productId), 3);
  const attempts = await eventually("the GetUser attempts logged", () => {
    const lines = logs.user.lines.filter(
      (line) => line.method === "/shop.user.v1.UserService/GetUser",
    );
    return lines.length >= 2 ? lines : undefined;
  });
  // The first answers; the second, a hedge, is cancelled as the first's answer arrives. On a
  // busy machine the first may answer after 1 s, when a third is on its way: cancelled too.
  const [first, ...hedges] = [...attempts].sort(
    (a, b) => Number(a.attempt ?? 1) - Number(b.attempt ?? 1),
  );
  t.like(first, { code: "OK", attempt: undefined });
  t.true(hedges.length >= 1);
  for (const [i, hedge] of hedges.entries()) t.like(hedge, { code: "CANCELLED", attempt: i + 2 });
});

test("the caller's deadline reaches the user and product services", async (t) => {
  const logs = { user: captureLogger("user"), product: captureLogger("product") };
  const fleet = await startFleet(t, {
    loggers: { user: logs.user.logger, product: logs.product.logger },
  });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 4 });
  // One order first, so that what a first call does once (importing the token keys, verifying
  // the caller's token, which is then remembered) is not counted as deadline drift below.
  await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "warm-up",
  });
  logs.user.lines.length = 0;
  logs.product.lines.length = 0;
  fleet.product.faults.set("ReserveStock", { delayMs: 8_000 });

  // The client fixes its deadline when the call starts: somewhere in [earliest, latest].
  const earliest = Date.now() + 2_000;
  const call = fleet.orders.createOrder(
    { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: "hurry" },
    { timeoutMs: 2_000 },
  );
  const latest = Date.now() + 2_000;
  const error = await t.throwsAsync(call, { instanceOf: ServiceError });
  t.is(error?.code, Code.DEADLINE_EXCEEDED);

  // The per-call log line is written when the downstream call ends, just after ours.
  const deadlineOf = (lines: Record<string, unknown>[], method: string) =>
    eventually(`the log line of ${method}`, () => {
      const line = lines.find((entry) => entry.method === method);
      return line && Date.parse(String(line.deadline));
    });
  // The downstream calls carried the caller's deadline, not the order service's 5 s default.
  // Each hop re-anchors the remaining time on arrival, so allow it to land later: up to a second
  // and a half on a loaded machine, where these three services and the client share one event
  // loop. The 5 s default would land 3 s late.
  for (const [lines, method] of [
    [logs.user.lines, "/shop.user.v1.UserService/GetUser"],
    [logs.product.lines, "/shop.product.v1.InventoryService/ReserveStock"],
  ] as const) {
    const deadline = await deadlineOf(lines, method);
    t.true(deadline >= earliest - 50, `${method} deadline ${deadline - earliest} ms early`);
    t.true(deadline <= latest + 1_500, `${method} deadline ${deadline - latest} ms late`);
  }
  // The abandoned reservation is compensated: nothing stays held.
  await until("the abandoned reservation to be released", async () => {
    return (await stockOf(fleet, mug.productId)) === 3;
  });
});

test("a CreateOrder whose own deadline runs out names no dependency", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 100 });
  fleet.product.faults.set("ReserveStock", { delayMs: 5_000 });
  const token = await tokenFor(user.userId);
  // By hand, so that the answer read is the service's: a client library ends the call itself at
  // its deadline.
  const session = connect(`http://${fleet.order.server.address}`);
  t.teardown(() => session.destroy());
  /** The ErrorInfo the service ends a CreateOrder with, given `timeout` as its grpc-timeout. */
  const answer = async (timeout: string, requestId: string) => {
    const { stream } = rawGrpcCall(session, "/shop.order.v1.OrderService/CreateOrder", {
      authorization: `Bearer ${token}`,
      "grpc-timeout": timeout,
    });
    // The status comes in the trailers, or in the headers when nothing was sent before it.
    const ended = new Promise<Record<string, unknown>>((resolve) => {
      stream.on("response", (headers) => headers["grpc-status"] !== undefined && resolve(headers));
      stream.on("trailers", resolve);
    });
    stream.resume();
    const request = { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId };
    stream.end(
      grpcFrame(CreateOrderRequest.encode(CreateOrderRequest.fromPartial(request)).finish()),
    );
    const status = await ended;
    const metadata = new Metadata();
    const details = String(status["grpc-status-details-bin"] ?? "");
    metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
    return { code: Number(status["grpc-status"]), ...decodeStatus(metadata) };
  };
  // The service's own timers and the caller's deadline race: some answers come from the saga.
  for (let i = 0; i < 40; i++) {
    const { code, reason, metadata } = await answer(`${5 + (i % 10) * 10}m`, `own-deadline-${i}`);
    t.is(code, Code.DEADLINE_EXCEEDED, reason);
    // A longer deadline would have let it finish: no wait of the service's own ran out.
    t.is(metadata?.dependency, undefined, `call ${i}: ${reason}`);
  }
});

test("cancelling returns the stock, and WatchOrder streams the change then ends", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 4 });
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 3)],
    requestId: "cancel-me",
  });
  const orderId = order?.orderId ?? "";
  const seen: OrderState[] = [];
  const watching = (async () => {
    for await (const update of fleet.orders.watchOrder({ orderId })) {
      seen.push(update.order?.state ?? OrderState.ORDER_STATE_UNSPECIFIED);
      if (seen.length === 1) await fleet.orders.cancelOrder({ orderId });
    }
  })();
  await watching;
  // CANCELLING too, whether or not a read of the order fell between the two steps of the cancel.
  t.deepEqual(seen, [
    OrderState.ORDER_STATE_CONFIRMED,
    OrderState.ORDER_STATE_CANCELLING,
    OrderState.ORDER_STATE_CANCELLED,
  ]);
  t.is(await stockOf(fleet, mug.productId), 4);

  const again = await fleet.orders.cancelOrder({ orderId });
  t.is(again.order?.state, OrderState.ORDER_STATE_CANCELLED);
  t.is(await stockOf(fleet, mug.productId), 4);
});

test("a dependency that does not serve the call makes CreateOrder UNAVAILABLE, not UNIMPLEMENTED", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 3 });
  // As an older product build, in a rolling upgrade, would answer an rpc it lacks.
  fleet.product.faults.set("ReserveStock", { code: Code.UNIMPLEMENTED });
  const error = await refusedCreate(
    t,
    fleet.orders,
    user.userId,
    mug.productId,
    1,
    "older-product",
  );
  t.is(error?.code, Code.UNAVAILABLE);
  t.like(error?.details, { reason: "DEPENDENCY_UNAVAILABLE", metadata: { dependency: "product" } });
  t.is(await stockOf(fleet, mug.productId), 3);
});

test("with the product service down, CreateOrder is UNAVAILABLE and places nothing", async (t) => {
  const user = await start(t, userService);
  const order = await start(t, createOrderService(), {
    dependencies: { users: user.server.address, inventory: "127.0.0.1:1" },
  });
  const { users, orders } = clientsFor(t, {
    user: user.server.address,
    order: order.server.address,
  });
  const shopper = await addUser(users);
  const error = await refusedCreate(t, orders, shopper.userId, "prd_x", 1, "down");
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(error?.details.reason, "DEPENDENCY_UNAVAILABLE");
  t.deepEqual(error?.details.metadata, { dependency: "product" });
  t.notRegex(
    JSON.stringify(error),
    /127\.0\.0\.1/,
    "no address inside the mesh reaches the caller",
  );
  // The order written before its stock was asked for is FAILED, and its request_id free again.
  const listed = await orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
  t.deepEqual(
    listed.orders.map((order) => order.state),
    [OrderState.ORDER_STATE_FAILED],
  );
});

test("killing the product service mid-flight loses no stock once it is back", async (t) => {
  const fleet = await startProcessFleet(t, {
    env: {
      SHOP_RESERVATION_SWEEP_MS: "100",
      SHOP_RESERVATION_TTL_MS: "1500",
      SHOP_RECONCILE_MS: "200",
    },
  });
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 100 });

  // A steady stream of orders; the product process dies with SIGKILL in the middle of it.
  const outcomes: Promise<unknown>[] = [];
  let killed: Promise<void> | undefined;
  for (let i = 0; i < 40; i++) {
    outcomes.push(
      fleet.orders.createOrder(
        { userId: shopper.userId, lines: [orderLine(mug.productId, 1)], requestId: `kill-${i}` },
        { timeoutMs: 3_000 },
      ),
    );
    if (i === 20) killed = fleet.kill("product");
    // Pacing, not synchronization: one order every 5 ms.
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const settled = await Promise.allSettled(outcomes);
  await killed;
  const failures = settled.flatMap((outcome) =>
    outcome.status === "rejected" ? [outcome.reason] : [],
  );
  t.true(failures.length > 0, "the kill should have failed some orders");
  for (const error of failures) {
    t.true(
      [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED].includes(error.code),
      `got ${Code[error.code]}`,
    );
  }

  await fleet.restart("product");
  // After the TTL and a reconcile pass, stock and confirmed orders agree exactly.
  const settle = async () => {
    const { orders } = await fleet.orders.listOrders({
      userId: shopper.userId,
      pageSize: 100,
      pageToken: "",
    });
    const confirmed = orders.filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED).length;
    const pending = orders.filter((o) => o.state === OrderState.ORDER_STATE_PENDING).length;
    return { confirmed, pending, stock: await stockOf(fleet, mug.productId) };
  };
  const state = await eventually(
    "no pending order, and stock plus confirmed orders back at 100",
    async () => {
      const now = await settle();
      return now.pending === 0 && (now.stock ?? 0) + now.confirmed === 100 ? now : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 200 },
  );
  t.is(state.pending, 0);
  t.is((state.stock ?? 0) + state.confirmed, 100);
  t.is(state.confirmed, settled.filter((outcome) => outcome.status === "fulfilled").length);
});

test("a graceful shutdown finishes in-flight calls and reports NOT_SERVING", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products);
  const health = createClient(HealthService, fleet.product.server.address);
  t.teardown(() => health.close());
  const statuses: HealthCheckResponse_ServingStatus[] = [];
  const watch = (async () => {
    for await (const update of health.watch(
      { service: "shop.product.v1.ProductService" },
      { timeoutMs: 5_000 },
    )) {
      statuses.push(update.status);
      if (update.status === HealthCheckResponse_ServingStatus.NOT_SERVING) return;
    }
  })();

  await until("the health watch to report SERVING", () => statuses.length > 0);
  fleet.product.faults.set("GetProduct", { delayMs: 800 });
  const inFlight = fleet.products.getProduct({ productId: mug.productId });
  await until("GetProduct to be in flight", () => fleet.product.faults.inFault("GetProduct") > 0);
  const stopping = fleet.product.server.shutdown();

  const { product } = await inFlight;
  t.is(product?.productId, mug.productId);
  await watch;
  t.deepEqual(statuses, [
    HealthCheckResponse_ServingStatus.SERVING,
    HealthCheckResponse_ServingStatus.NOT_SERVING,
  ]);
  await stopping;
  const refused = await t.throwsAsync(fleet.products.getProduct({ productId: mug.productId }), {
    instanceOf: ServiceError,
  });
  t.is(refused?.code, Code.UNAVAILABLE);
});
