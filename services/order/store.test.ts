// The orders store as concurrent calls meet it: a read never sees half an order, and replicas'
// reconciler runs take each order once. It runs again on the other storages through
// services/handlers.*.test.ts.
import test from "ava";
import { type Knex, openDatabase } from "../../kit/db/index.js";
import { newId } from "../../kit/ids.js";
import { createLogger } from "../../kit/observability/logger.js";
import { freshDatabase, opening } from "../../test/helpers/storage.js";
import { migrations } from "./migrations/index.js";
import { OrderStore } from "./store.js";

const logger = createLogger("order", "silent");

/**
 * `db` for a store's reads, whose first read of `table` after `before` is set waits for it to
 * run first: what a concurrent write does between two reads, made to happen every time.
 */
function readsWaitingOnce(db: Knex, table: string) {
  const seam: { before?: () => Promise<unknown> } = {};
  const reads = new Proxy(db, {
    apply(target, self, args: [string]) {
      const query = Reflect.apply(target, self, args);
      const run = seam.before;
      if (args[0] !== table || !run) return query;
      seam.before = undefined;
      // The builder's methods return the proxy, so the query's run waits wherever it is awaited.
      return new Proxy(query, {
        get: (builder, key, receiver) =>
          key === "then"
            ? (ok: never, ko: never) => run().then(() => builder.then(ok, ko), ko)
            : Reflect.get(builder, key, receiver),
      });
    },
  });
  return { reads, seam };
}

test("an order discarded while its idempotency key is looked up is found whole or not at all", async (t) => {
  const db = opening(
    await openDatabase(await freshDatabase(), migrations, { schema: "order", logger }),
  );
  t.teardown(() => db.destroy());
  const store = new OrderStore({ db, reads: db });
  // The lookup reads the order, then its lines: the discard is made to run between the two.
  const { reads, seam } = readsWaitingOnce(db, "order_lines");
  const lookups = new OrderStore({ db, reads });
  const orderId = newId("ord");
  await store.insert({
    orderId,
    userId: "usr_alice",
    idempotencyKey: "discarded",
    reservationId: `order:${orderId}`,
    lines: [{ productId: "prd_mug", quantity: 2 }],
  });
  let discarded: boolean | undefined;
  seam.before = async () => {
    discarded = await store.discard(orderId);
  };
  const found = await lookups.findByIdempotencyKey("usr_alice", "discarded");
  t.true(discarded, "the discard ran between the two reads");
  t.is(found, undefined, "not an order without its lines");
});

test("a page of large orders reads the lines of about the orders it holds, not of every candidate", async (t) => {
  const db = opening(
    await openDatabase(await freshDatabase(), migrations, { schema: "order", logger }),
  );
  t.teardown(() => db.destroy());
  const store = new OrderStore({ db: db, reads: db });
  // 1,000 orders of 100 lines: a page of 2 MB holds under 300 of them.
  const lines = Array.from({ length: 100 }, (_, n) => ({
    productId: `prd_${String(n).padStart(16, "0")}`,
    quantity: 1,
  }));
  for (let i = 0; i < 1000; i++) {
    const orderId = newId("ord");
    await store.insert({
      orderId,
      userId: "usr_big",
      idempotencyKey: `big-${i}`,
      reservationId: `order:${orderId}`,
      lines,
    });
  }
  let linesRead = 0;
  db.on("query-response", (response: unknown, query: { sql?: string }) => {
    if (/order_lines/.test(query.sql ?? "") && Array.isArray(response)) {
      linesRead += response.length;
    }
  });
  const first = await store.list(1000, undefined, undefined, { userId: "usr_big" });
  const held = first.orders.length;
  t.true(held > 100 && held < 400, `${held} orders`);
  t.true(linesRead <= 1.2 * held * 100, `${linesRead} lines read for ${held} orders`);
  // Every order comes once, whole, across the pages.
  const seen = new Set(first.orders.map(({ orderId }) => orderId));
  for (let next = first.nextSeq; next !== undefined; ) {
    const page = await store.list(1000, next, undefined, { userId: "usr_big" });
    for (const { orderId } of page.orders) seen.add(orderId);
    t.true(page.orders.every((order) => order.lines.length === 100));
    next = page.nextSeq;
  }
  t.is(seen.size, 1000);
});

test("a run takes only orders still unsettled, and lets go only of the orders it still holds", async (t) => {
  const db = opening(
    await openDatabase(await freshDatabase(), migrations, { schema: "order", logger }),
  );
  t.teardown(() => db.destroy());
  const store = new OrderStore({ db: db, reads: db });
  const place = (userId: string) => {
    const orderId = newId("ord");
    return store.insert({
      orderId,
      userId,
      idempotencyKey: "k-1",
      reservationId: `order:${orderId}`,
      lines: [{ productId: "prd_mug", quantity: 1 }],
    });
  };
  const [a, b] = [await place("usr_alice"), await place("usr_bob")];
  for (const order of [a, b]) t.true(await store.fail(order.orderId));
  const now = Date.now();
  // A run read both; another run took and settled a meanwhile, and let it go.
  const read = (await store.unsettled(0, 10)).map((order) => order.orderId);
  t.deepEqual([...read].sort(), [a.orderId, b.orderId].sort());
  await store.markReleased(a.orderId);
  t.deepEqual(await store.claimForReconcile(read, 0, now, now + 60_000), new Set([b.orderId]));
  // Its lease lapsed mid-batch and another run took b: the first run's end leaves b to that one.
  const later = now + 60_000;
  t.deepEqual(
    await store.claimForReconcile([b.orderId], 0, later, later + 60_000),
    new Set([b.orderId]),
  );
  await store.unclaim([b.orderId], now + 60_000);
  t.deepEqual(await store.unsettled(0, 10, [], later + 1), [], "b is still the second run's");
  await store.unclaim([b.orderId], later + 60_000);
  t.is((await store.unsettled(0, 10, [], later + 1)).length, 1);
});

test("a page leaves out an order discarded between its two reads, and the next page goes on after it", async (t) => {
  const db = opening(
    await openDatabase(await freshDatabase(), migrations, { schema: "order", logger }),
  );
  t.teardown(() => db.destroy());
  const store = new OrderStore({ db, reads: db });
  const placed = [];
  for (const key of ["k-1", "k-2", "k-3"]) {
    const orderId = newId("ord");
    placed.push(
      await store.insert({
        orderId,
        userId: "usr_alice",
        idempotencyKey: key,
        reservationId: `order:${orderId}`,
        lines: [{ productId: "prd_mug", quantity: 1 }],
      }),
    );
  }
  const [oldest, middle, newest] = placed.map((order) => order.orderId);
  // The page reads its orders, then their lines: the middle one is discarded between the two.
  let discarded = false;
  const { reads, seam } = readsWaitingOnce(db, "order_lines");
  seam.before = async () => {
    discarded = await store.discard(middle as string);
  };
  const lister = new OrderStore({ db, reads });
  const filter = { userId: "usr_alice" };
  const first = await lister.list(2, undefined, undefined, filter);
  t.true(discarded, "the discard ran between the two reads");
  t.deepEqual(
    first.orders.map((order) => order.orderId),
    [newest],
  );
  t.true(first.orders.every((order) => order.lines.length > 0));
  const rest = await lister.list(2, first.nextSeq, undefined, filter);
  t.deepEqual(
    rest.orders.map((order) => order.orderId),
    [oldest],
  );
  t.is(rest.nextSeq, undefined);
});
