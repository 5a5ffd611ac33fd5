// CancelOrder and WatchOrder handlers called directly, each test on its own in-memory database,
// the saga behind CancelOrder talking to real user and product servers on port 0.
import test from "ava";
import { CancelOrderRequest, WatchOrderRequest } from "../../gen/ts/shop/order/v1/order.js";
import { Code } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { callContext } from "../../test/helpers/context.js";
import { until } from "../../test/helpers/eventually.js";
import { expectInvalid, expectStatus } from "../../test/helpers/status.js";
import {
  CANCELLED,
  CANCELLING,
  CONFIRMED,
  chars,
  collect,
  ctx,
  FAILED,
  PENDING,
  setup,
  shareDependencies,
} from "./test-setup.js";

shareDependencies(test);

// CancelOrder

test("CancelOrder cancels a confirmed order and returns its stock, idempotently", async (t) => {
  const { handlers, users, products, order, stock } = await setup(t);
  const shopper = await addUser(users);
  const mug = await addProduct(products, { stock: 10 });
  const placed = await order(shopper.userId, [[mug.productId, 4]]);
  t.deepEqual(await stock(mug.productId), [6]);

  const cancel = () =>
    handlers.cancelOrder(
      CancelOrderRequest.fromPartial({ orderId: placed.orderId }),
      ctx("CancelOrder"),
    );
  const { order: cancelled } = await cancel();
  t.is(cancelled?.state, CANCELLED);
  t.deepEqual(
    { ...cancelled, state: undefined, updateTime: undefined },
    { ...placed, state: undefined, updateTime: undefined },
  );
  t.deepEqual(await stock(mug.productId), [10]);

  const { order: again } = await cancel();
  t.deepEqual(again, cancelled, "a second cancel returns the order unchanged");
  t.deepEqual(await stock(mug.productId), [10], "and returns no stock twice");
});

test("CancelOrder refuses an empty or too long id", async (t) => {
  const { handlers } = await setup(t);
  for (const orderId of ["", chars(65)]) {
    await expectInvalid(
      t,
      handlers.cancelOrder(CancelOrderRequest.fromPartial({ orderId }), ctx("CancelOrder")),
      ["order_id"],
    );
  }
});

test("CancelOrder of an unknown id is NOT_FOUND with reason ORDER_NOT_FOUND", async (t) => {
  const { handlers } = await setup(t);
  await expectStatus(
    t,
    handlers.cancelOrder(
      CancelOrderRequest.fromPartial({ orderId: "ord_missing" }),
      ctx("CancelOrder"),
    ),
    Code.NOT_FOUND,
    "ORDER_NOT_FOUND",
  );
});

test("CancelOrder of a pending or failed order is ORDER_NOT_CANCELLABLE", async (t) => {
  const { handlers, store, seed } = await setup(t);
  const pending = await seed("usr_a");
  const failed = await seed("usr_a");
  t.true(await store.fail(failed.orderId));
  for (const [orderId, state] of [
    [pending.orderId, PENDING],
    [failed.orderId, FAILED],
  ] as const) {
    const error = await expectStatus(
      t,
      handlers.cancelOrder(CancelOrderRequest.fromPartial({ orderId }), ctx("CancelOrder")),
      Code.FAILED_PRECONDITION,
      "ORDER_NOT_CANCELLABLE",
    );
    t.deepEqual(error?.details.metadata, { order_id: orderId });
    t.is((await store.get(orderId)).order.state, state, "the order is unchanged");
  }
});

// WatchOrder

test("WatchOrder refuses an empty or too long id and an unknown one", async (t) => {
  const { handlers } = await setup(t);
  for (const orderId of ["", chars(65)]) {
    await expectInvalid(
      t,
      collect(handlers.watchOrder(WatchOrderRequest.fromPartial({ orderId }), ctx("WatchOrder"))),
      ["order_id"],
    );
  }
  await expectStatus(
    t,
    collect(
      handlers.watchOrder(
        WatchOrderRequest.fromPartial({ orderId: "ord_missing" }),
        ctx("WatchOrder"),
      ),
    ),
    Code.NOT_FOUND,
    "ORDER_NOT_FOUND",
  );
});

test("WatchOrder sends the order, then each change, and ends at a final state", async (t) => {
  const { handlers, users, products, order } = await setup(t);
  const shopper = await addUser(users);
  const mug = await addProduct(products, { stock: 10 });
  const placed = await order(shopper.userId, [[mug.productId, 1]]);

  const stream = handlers
    .watchOrder(WatchOrderRequest.fromPartial({ orderId: placed.orderId }), ctx("WatchOrder"))
    [Symbol.asyncIterator]();
  const first = await stream.next();
  t.is(first.value?.order?.state, CONFIRMED);
  t.is(first.value?.order?.orderId, placed.orderId);

  await handlers.cancelOrder(
    CancelOrderRequest.fromPartial({ orderId: placed.orderId }),
    ctx("CancelOrder"),
  );
  // CANCELLING, then CANCELLED: the watch read the order once the cancel had finished.
  const second = await stream.next();
  t.is(second.value?.order?.state, CANCELLING);
  t.deepEqual(
    { ...second.value?.order, state: undefined, updateTime: undefined },
    { ...first.value?.order, state: undefined, updateTime: undefined },
  );
  const third = await stream.next();
  t.is(third.value?.order?.state, CANCELLED);
  t.true((await stream.next()).done, "the stream ends after the final state");

  // Watching a final order sends it once and ends.
  const final = await collect(
    handlers.watchOrder(
      WatchOrderRequest.fromPartial({ orderId: placed.orderId }),
      ctx("WatchOrder"),
    ),
  );
  t.deepEqual(
    final.map((o) => o.state),
    [CANCELLED],
  );
});

test("WatchOrder on another replica streams each state an order passed through between two polls", async (t) => {
  const { replica, store, users, seed } = await setup(t);
  const shopper = await addUser(users);
  const pending = await seed(shopper.userId);
  const stream = replica(100)
    .watchOrder(WatchOrderRequest.fromPartial({ orderId: pending.orderId }), ctx("WatchOrder"))
    [Symbol.asyncIterator]();
  t.is((await stream.next()).value?.order?.state, PENDING);

  // Confirmed and cancelled by the first replica before the watch's next poll, as its saga does.
  const confirmedAt = Date.now() - 3_000;
  const cancellingAt = confirmedAt + 1_000;
  const prices = { currencyCode: "EUR", totalMinor: 250n, unitPricesMinor: [250n] };
  t.true(await store.confirm(pending.orderId, prices, confirmedAt));
  t.true(await store.transition(pending.orderId, [CONFIRMED], CANCELLING, cancellingAt));
  t.true(await store.finishCancel(pending.orderId));

  const rest = await collect({ [Symbol.asyncIterator]: () => stream });
  t.deepEqual(
    rest.map((order) => order.state),
    [CONFIRMED, CANCELLING, CANCELLED],
  );
  t.deepEqual(
    rest.slice(0, 2).map((order) => order.updateTime?.getTime()),
    [confirmedAt, cancellingAt],
  );
  for (const order of rest) t.deepEqual(order.total, { currencyCode: "EUR", amountMinor: "250" });
});

test("WatchOrders on another replica read their orders together, once per poll, and each still sees its own change", async (t) => {
  const { db, replica, store, seed } = await setup(t);
  const pending = await Promise.all(Array.from({ length: 20 }, () => seed("usr_a")));
  const handlers = replica(100);
  const streams = pending.map(({ orderId }) =>
    handlers
      .watchOrder(WatchOrderRequest.fromPartial({ orderId }), ctx("WatchOrder"))
      [Symbol.asyncIterator](),
  );
  for (const stream of streams) t.is((await stream.next()).value?.order?.state, PENDING);
  const nexts = streams.map((stream) => stream.next());

  let queries = 0;
  const counted = () => queries++;
  const since = Date.now();
  db.on("query", counted);
  await until("three queries", () => queries >= 3);
  const polls = Math.ceil((Date.now() - since) / 100);
  db.off("query", counted);
  // One query per poll, however slow the machine; a read of each order would be 20 a poll.
  t.true(queries <= polls + 1, `${queries} queries in ${polls} polls`);

  // Failed by the first replica: the next poll wakes each watch, which sends FAILED and ends.
  for (const { orderId } of pending) t.true(await store.fail(orderId));
  for (const [i, stream] of streams.entries()) {
    t.is((await nexts[i])?.value?.order?.state, FAILED);
    t.true((await stream.next()).done);
  }
});

test("WatchOrder ends when the call is cancelled", async (t) => {
  const { handlers, seed } = await setup(t);
  const pending = await seed("usr_a");
  const controller = new AbortController();
  const stream = handlers
    .watchOrder(
      WatchOrderRequest.fromPartial({ orderId: pending.orderId }),
      callContext("shop.order.v1.OrderService", "WatchOrder", { signal: controller.signal }),
    )
    [Symbol.asyncIterator]();
  t.is((await stream.next()).value?.order?.state, PENDING);
  const next = stream.next();
  controller.abort();
  t.true((await next).done);
});
