// No answer on an SQLite file tells of a commit that is not on disk (SHOP_SQLITE_SYNC,
// kit/db/wal-sync.ts): a crashed host cannot take back what a caller was told. A write rpc waits
// for a sync that began after its commits, and calls made at once share one. A read, and each
// message of a stream, waits only while some commit is not yet on disk, whichever replica of the
// file made it. CreateOrder's confirmation can be rebuilt after a crash, so its OK answer waits
// only for the sync that began once its order was written.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import type { ServerConfig } from "../../kit/config.js";
import { Code } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { createProductService } from "../../services/product/service.js";
import { until } from "../helpers/eventually.js";
import { clientsFor, orderLine, start, startFleet, type TestService } from "../helpers/fleet.js";
import { rpcGate } from "../helpers/gate.js";
import { expectStatus } from "../helpers/status.js";

async function scratch(t: ExecutionContext) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-durable-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function catalog(t: ExecutionContext, config: Partial<ServerConfig> = {}) {
  const dir = await scratch(t);
  const service = await start(t, createProductService(), {
    database: path.join(dir, "product.sqlite"),
    config,
  });
  const { products } = clientsFor(t, { product: service.server.address });
  return { service, products };
}

/** `shop_sqlite_wal_syncs_total`, or undefined when the service has no such counter. */
async function syncs(service: TestService): Promise<number | undefined> {
  const text = await service.metrics.text();
  const value = /^shop_sqlite_wal_syncs_total (\d+)$/m.exec(text)?.[1];
  return value === undefined ? undefined : Number(value);
}

test("a write is synced before it answers, a read is not", async (t) => {
  const { service, products } = await catalog(t);
  const mug = await addProduct(products, { name: "mug" });
  const afterWrite = (await syncs(service)) ?? 0;
  t.true(afterWrite >= 1, `${afterWrite} syncs`);
  for (let i = 0; i < 5; i++) await products.getProduct({ productId: mug.productId });
  t.is(await syncs(service), afterWrite);
});

/**
 * A product renamed on `writer`'s database with no call, as a sweep or a reconciler writes; a
 * GetProduct on `reader` that reads the new name must wait for one sync, and the next for none.
 */
async function readAfterQuietWrite(
  t: ExecutionContext,
  writer: TestService,
  reader: TestService,
  products: ReturnType<typeof clientsFor>["products"],
) {
  const mug = await addProduct(products, { name: "mug" });
  await products.getProduct({ productId: mug.productId });
  const before = (await syncs(reader)) ?? 0;
  await writer.db("products").where({ product_id: mug.productId }).update({ name: "cup" });
  const { product } = await products.getProduct({ productId: mug.productId });
  t.is(product?.name, "cup");
  t.is(await syncs(reader), before + 1);
  await products.getProduct({ productId: mug.productId });
  t.is(await syncs(reader), before + 1, "nothing is behind any more");
}

test("a read that may have seen a commit not yet on disk waits for a sync", async (t) => {
  const { service, products } = await catalog(t);
  await readAfterQuietWrite(t, service, service, products);
});

test("a read waits for a commit another replica of the file made, not yet on disk", async (t) => {
  const database = path.join(await scratch(t), "product.sqlite");
  const first = await start(t, createProductService(), { database });
  const second = await start(t, createProductService(), { database });
  const { products } = clientsFor(t, { product: second.server.address });
  await readAfterQuietWrite(t, first, second, products);
});

test("writes made at once share syncs", async (t) => {
  const { service, products } = await catalog(t);
  await addProduct(products, { name: "first" });
  const before = (await syncs(service)) ?? 0;
  await Promise.all(Array.from({ length: 40 }, (_, i) => addProduct(products, { name: `p${i}` })));
  const made = ((await syncs(service)) ?? 0) - before;
  t.log(`40 creates at once: ${made} syncs`);
  t.true(made >= 1 && made < 40, `${made} syncs`);
});

test("SHOP_SQLITE_SYNC=at-checkpoint leaves syncing to SQLite", async (t) => {
  const { service, products } = await catalog(t, { sqliteSync: "at-checkpoint" });
  await addProduct(products, { name: "mug" });
  t.is(await syncs(service), undefined);
});

/**
 * A fleet whose order service keeps its orders in an SQLite file. Product's ReserveStock waits at
 * the gate until the test opens it.
 */
async function gatedReservations(t: ExecutionContext) {
  const dir = await scratch(t);
  const gate = rpcGate(t, "ReserveStock");
  const fleet = await startFleet(t, {
    databases: { order: path.join(dir, "order.sqlite") },
    middleware: { product: [gate.middleware] },
  });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 1 });
  return { fleet, user, mug, open: gate.open, waiting: gate.waiting };
}

test("CreateOrder's sync begins at its order's write, while product reserves the stock", async (t) => {
  const { fleet, user, mug, open, waiting } = await gatedReservations(t);
  const before = (await syncs(fleet.order)) ?? 0;
  const placing = fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "",
  });
  // Failing the test closes the clients under it: the call's end is then no one's business.
  placing.catch(() => {});
  // ReserveStock comes after GetUser, which may take longer than the sync: wait for both.
  await until("ReserveStock at the gate", () => waiting() === 1);
  await until("order's sync", async () => ((await syncs(fleet.order)) ?? 0) > before);
  t.is(waiting(), 1, "the stock is still being reserved");
  open();
  const { order } = await placing;
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await syncs(fleet.order), before + 1, "the confirmation waits for no sync of its own");
});

test("a refused CreateOrder still waits for a sync of all it wrote", async (t) => {
  const { fleet, user, mug, open } = await gatedReservations(t);
  open();
  const before = (await syncs(fleet.order)) ?? 0;
  await expectStatus(
    t,
    fleet.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(mug.productId, 2)],
      requestId: "",
    }),
    Code.FAILED_PRECONDITION,
    "INSUFFICIENT_STOCK",
  );
  // One as the order was written, one after it was deleted again.
  t.is(await syncs(fleet.order), before + 2);
});

test("a WatchOrder message waits for the change it reports to be on disk", async (t) => {
  const dir = await scratch(t);
  const fleet = await startFleet(t, { databases: { order: path.join(dir, "order.sqlite") } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products);
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "",
  });
  const orderId = order?.orderId ?? "";
  const updates = fleet.orders.watchOrder({ orderId })[Symbol.asyncIterator]();
  t.is((await updates.next()).value?.order?.state, OrderState.ORDER_STATE_CONFIRMED);
  const before = (await syncs(fleet.order)) ?? 0;
  // A cancel recorded on the database behind the service's back; the watch reads it at its poll.
  await fleet.order
    .db("orders")
    .where({ order_id: orderId })
    .update({ state: OrderState.ORDER_STATE_CANCELLING });
  // The reconciler may have finished the cancel before the watch read it.
  const next = (await updates.next()).value?.order?.state;
  t.true(
    next === OrderState.ORDER_STATE_CANCELLING || next === OrderState.ORDER_STATE_CANCELLED,
    `${next}`,
  );
  t.true(((await syncs(fleet.order)) ?? 0) > before);
  await updates.return?.();
});
