// An order placed end to end on a fleet of its own: confirmed at the reserved price, through
// the generated grpc-js client too, never overselling, cancelled with its stock given back; and
// its request_id: retries, alone or at once, place one order per user and key, and the same key
// with another body is refused, or answered for its own body.
import { credentials, Metadata } from "@grpc/grpc-js";
import test from "ava";
import {
  type CreateOrderResponse,
  OrderServiceClient,
  OrderState,
} from "../../gen/ts/shop/order/v1/order.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { tokenFor } from "../helpers/credentials.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { stockOf } from "./helpers.js";

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
  // What is checked is who wins the stock, not how fast: fifty sagas at once on PostgreSQL can
  // take longer than the client's default deadline on a loaded CI host.
  const outcomes = await Promise.allSettled(
    Array.from({ length: 50 }, (_, i) =>
      fleet.orders.createOrder(
        { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: `rush-${i}` },
        { timeoutMs: 30_000 },
      ),
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
