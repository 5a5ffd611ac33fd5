// CreateOrder's request_id: retries, alone or at once, place one order per user and key; the
// same key with another body is refused, or answered for its own body.
import test from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { stockOf } from "./helpers.js";

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
