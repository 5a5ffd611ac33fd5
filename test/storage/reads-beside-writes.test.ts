// Replicas share an SQLite file, and one of them (or anything else) may hold its write lock: a
// write on another replica then waits for it, holding that replica's connection. Its reads must not
// wait too, since WAL lets readers go on beside a writer: every read rpc answers while the write
// is still waiting, on both drivers (reads-beside-writes.sqlite3.test.ts).
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import knex, { type Knex } from "knex";
import { sqliteDriver } from "../../kit/db.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import type { ServiceName } from "../../services/registry.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startFleet, type TestFleet } from "../helpers/fleet.js";
import { openingIn } from "../helpers/storage.js";

/** A fleet on SQLite files of its own, with a user, a product and a confirmed order. */
async function fleetOnFiles(t: ExecutionContext) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-reads-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const files = {
    user: path.join(dir, "user.sqlite"),
    product: path.join(dir, "product.sqlite"),
    order: path.join(dir, "order.sqlite"),
  };
  for (const file of Object.values(files)) openingIn(file);
  const fleet = await startFleet(t, { databases: files });
  const user = await addUser(fleet.users);
  const product = await addProduct(fleet.products, { stock: 10 });
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(product.productId, 1)],
    requestId: "",
  });
  return { fleet, files, user, product, orderId: order?.orderId ?? "" };
}

/**
 * Another connection takes the file's write lock, then `write` starts on the service and waits
 * for it, holding the service's one connection. Resolves with the write's outcome once the lock is
 * let go; `whileWaiting` runs before that, and fails if the write ended meanwhile.
 */
async function whileAWriteWaits(
  t: ExecutionContext,
  fleet: TestFleet,
  service: ServiceName,
  file: string,
  write: () => Promise<unknown>,
  whileWaiting: () => Promise<void>,
) {
  const locker: Knex = knex({
    client: sqliteDriver(),
    connection: { filename: file },
    useNullAsDefault: true,
  });
  t.teardown(() => locker.destroy());
  await locker.raw("BEGIN IMMEDIATE");
  let ended = false;
  const writing = write().then(
    () => "OK",
    (error: Error) => error.message,
  );
  void writing.finally(() => {
    ended = true;
  });
  const pool = (fleet[service].db.client as { pool: { numUsed(): number } }).pool;
  await until(`the ${service} write to hold its connection`, () => pool.numUsed() === 1);

  await whileWaiting();
  t.false(ended, "the write ended before the reads answered: they did not run beside it");

  await locker.raw("ROLLBACK");
  t.is(await writing, "OK");
}

test("user: GetUser and ListUsers answer while an UpdateUser waits for the write lock", async (t) => {
  const { fleet, files, user } = await fleetOnFiles(t);
  await whileAWriteWaits(
    t,
    fleet,
    "user",
    files.user,
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

test("product: GetProduct and ListProducts answer while an UpdateProduct waits for the write lock", async (t) => {
  const { fleet, files, product } = await fleetOnFiles(t);
  await whileAWriteWaits(
    t,
    fleet,
    "product",
    files.product,
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
    },
  );
});

test("order: GetOrder, ListOrders and WatchOrder answer while a CreateOrder waits for the write lock", async (t) => {
  const { fleet, files, user, product, orderId } = await fleetOnFiles(t);
  await whileAWriteWaits(
    t,
    fleet,
    "order",
    files.order,
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
    },
  );
});
