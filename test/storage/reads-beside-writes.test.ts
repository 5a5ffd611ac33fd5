// A write that waits for a lock another process holds (a replica stalled inside a transaction, a
// backup, an operator's shell) holds a connection of its service meanwhile. Its service's reads
// must not wait too: every read rpc answers while two writes still wait, and so do a CreateOrder
// resent for an order already placed and a scrape of the product's metrics. On SQLite the lock
// is the file's write lock, and a process writes through one connection; on PostgreSQL an
// EXCLUSIVE lock on the table, which plain reads pass, and two waiting writes fill a pool of two
// (reads-beside-writes.sqlite3.test.ts, .postgres.test.ts).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import knex, { type Knex } from "knex";
import { isPostgresUrl, sqliteDriver } from "../../kit/db/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import type { ServiceName } from "../../services/registry.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startFleet, type TestFleet } from "../helpers/fleet.js";
import { freshDatabase, onPostgres, openingIn } from "../helpers/storage.js";

// Two waiting writes fill a PostgreSQL pool of two: the reads need connections of their own.
process.env.SHOP_DATABASE_POOL_MAX = "2";

/** A fleet on databases of its own (SQLite files), with a user, a product and an order. */
async function fleetWithData(t: ExecutionContext) {
  let databases: Record<"user" | "product" | "order", string>;
  if (onPostgres()) {
    const url = await freshDatabase();
    databases = { user: url, product: url, order: url };
  } else {
    const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-reads-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    databases = {
      user: path.join(dir, "user.sqlite"),
      product: path.join(dir, "product.sqlite"),
      order: path.join(dir, "order.sqlite"),
    };
    for (const file of Object.values(databases)) openingIn(file);
  }
  const fleet = await startFleet(t, { databases });
  const user = await addUser(fleet.users);
  const product = await addProduct(fleet.products, { stock: 10 });
  const placing = {
    userId: user.userId,
    lines: [orderLine(product.productId, 1)],
    requestId: "first-order",
  };
  const { order } = await fleet.orders.createOrder(placing);
  return { fleet, databases, user, product, placing, orderId: order?.orderId ?? "" };
}

/** Takes a lock from outside the service that keeps `table`'s writes waiting; resolves to its release. */
async function lockWrites(t: ExecutionContext, location: string, schema: string, table: string) {
  const locker: Knex = isPostgresUrl(location)
    ? knex({ client: "pg", connection: location, pool: { min: 1, max: 1 } })
    : knex({ client: sqliteDriver(), connection: { filename: location }, useNullAsDefault: true });
  t.teardown(() => locker.destroy());
  if (isPostgresUrl(location)) {
    await locker.raw("BEGIN");
    await locker.raw(`LOCK TABLE "${schema}"."${table}" IN EXCLUSIVE MODE`);
  } else {
    await locker.raw("BEGIN IMMEDIATE");
  }
  return () => locker.raw("ROLLBACK");
}

/**
 * Two `write`s start on the service while `lock` keeps them waiting, each holding a connection or
 * waiting for one; `whileWaiting` runs then, and fails if a write ended meanwhile. Both writes
 * must succeed once the lock is let go.
 */
async function whileWritesWait(
  t: ExecutionContext,
  fleet: TestFleet,
  service: ServiceName,
  release: () => Promise<unknown>,
  write: () => Promise<unknown>,
  whileWaiting: () => Promise<void>,
) {
  let ended = 0;
  const writing = [write(), write()].map((promise) =>
    promise
      .then(
        () => "OK",
        (error: Error) => error.message,
      )
      .finally(() => ended++),
  );
  const pool = (
    fleet[service].db.client as { pool: { numUsed(): number; numPendingAcquires(): number } }
  ).pool;
  await until(
    `both ${service} writes to hold or wait for a connection`,
    () => pool.numUsed() + pool.numPendingAcquires() >= 2,
  );

  await whileWaiting();
  t.is(ended, 0, "a write ended before the reads answered: they did not run beside it");

  await release();
  t.deepEqual(await Promise.all(writing), ["OK", "OK"]);
}

test("user: GetUser and ListUsers answer while UpdateUsers wait for a lock", async (t) => {
  const { fleet, databases, user } = await fleetWithData(t);
  await whileWritesWait(
    t,
    fleet,
    "user",
    await lockWrites(t, databases.user, "user", "users"),
    () =>
      fleet.users.updateUser({
        user: { ...user, displayName: "Renamed" },
        updateMask: ["display_name"],
      }),
    async () => {
      t.is((await fleet.users.getUser({ userId: user.userId })).user?.userId, user.userId);
      t.true((await fleet.users.listUsers({ pageSize: 10, pageToken: "" })).users.length > 0);
    },
  );
});

test("product: GetProduct, ListProducts and a metrics scrape answer while UpdateProducts wait for a lock", async (t) => {
  const { fleet, databases, product } = await fleetWithData(t);
  await whileWritesWait(
    t,
    fleet,
    "product",
    await lockWrites(t, databases.product, "product", "products"),
    () =>
      fleet.products.updateProduct({
        product: { ...product, name: "Renamed" },
        updateMask: ["name"],
      }),
    async () => {
      const { productId } = product;
      t.is((await fleet.products.getProduct({ productId })).product?.productId, productId);
      const listed = await fleet.products.listProducts({
        pageSize: 10,
        pageToken: "",
        inStockOnly: false,
      });
      t.true(listed.products.length > 0);
      // A scrape reads how many reservations are held: metrics answer too.
      const scraped =
        await fleet.product.metrics.registry.getSingleMetricAsString("shop_reservations_held");
      t.regex(scraped, /^shop_reservations_held 0$/m);
    },
  );
});

test("order: GetOrder, ListOrders, WatchOrder and a resent CreateOrder answer while CreateOrders wait for a lock", async (t) => {
  const { fleet, databases, user, product, placing, orderId } = await fleetWithData(t);
  await whileWritesWait(
    t,
    fleet,
    "order",
    await lockWrites(t, databases.order, "order", "orders"),
    () =>
      fleet.orders.createOrder(
        { userId: user.userId, lines: [orderLine(product.productId, 1)], requestId: "" },
        { timeoutMs: 20_000 },
      ),
    async () => {
      t.is((await fleet.orders.getOrder({ orderId })).order?.orderId, orderId);
      const listed = await fleet.orders.listOrders({
        userId: user.userId,
        pageSize: 10,
        pageToken: "",
      });
      t.deepEqual(
        listed.orders.map((order) => order.orderId),
        [orderId],
      );
      for await (const { order } of fleet.orders.watchOrder({ orderId })) {
        t.is(order?.orderId, orderId);
        break;
      }
      // A resend of an order already placed finds it without a write.
      t.is((await fleet.orders.createOrder(placing)).order?.orderId, orderId);
    },
  );
});
