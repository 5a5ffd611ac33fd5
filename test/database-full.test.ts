// A database with no room left for a write: a full disk, here SQLite's page limit
// (`max_page_count`), which fails a write with the same SQLITE_FULL. The caller gets
// RESOURCE_EXHAUSTED with an ErrorInfo, not INTERNAL; nothing of the refused write is kept; the
// log says why at warn level, and the store's error count (which the alerts read) says full; and
// once there is room again, the service writes as before. An order written but not confirmed is
// not "nothing written": its answer names it.
import test from "ava";
import { OrderState } from "../gen/ts/shop/order/v1/order.js";
import type { Knex } from "../kit/db/index.js";
import { Code, ServiceError } from "../kit/errors.js";
import { addProduct, addUser } from "../scripts/lib/seed.js";
import { eventually } from "./helpers/eventually.js";
import { captureLogger, orderLine, startFleet } from "./helpers/fleet.js";

/** Leaves no room beyond the pages the database has now; returns what gives the room back. */
async function fill(db: Knex): Promise<() => Promise<void>> {
  const [row] = (await db.raw("PRAGMA page_count")) as { page_count: number }[];
  await db.raw(`PRAGMA max_page_count = ${Number(row?.page_count)}`);
  return async () => {
    await db.raw("PRAGMA max_page_count = 1073741823");
  };
}

/** Runs `write` until it fails (at most `tries` times); returns its successes and the failure. */
async function untilRefused<T>(write: (n: number) => Promise<T>, tries = 400) {
  const done: T[] = [];
  for (let n = 0; n < tries; n++) {
    try {
      done.push(await write(n));
    } catch (error) {
      return { done, refused: error };
    }
  }
  return { done, refused: undefined };
}

/**
 * Leaves room for orders to be written but none for their confirmation: confirming one also
 * writes 1 MB of ballast (a trigger), which does not fit. Returns what gives the room back.
 */
async function fullOnConfirm(db: Knex): Promise<() => Promise<void>> {
  await db.raw("CREATE TABLE ballast (b BLOB)");
  await db.raw(
    `CREATE TRIGGER ballast_on_confirm BEFORE UPDATE OF state ON orders` +
      ` WHEN NEW.state = ${OrderState.ORDER_STATE_CONFIRMED}` +
      ` BEGIN INSERT INTO ballast VALUES (zeroblob(1000000)); END`,
  );
  const [row] = (await db.raw("PRAGMA page_count")) as { page_count: number }[];
  await db.raw(`PRAGMA max_page_count = ${Number(row?.page_count) + 64}`);
  return async () => {
    await db.raw("DROP TRIGGER ballast_on_confirm");
    await db.raw("PRAGMA max_page_count = 1073741823");
  };
}

const isFullRefusal = (error: unknown) =>
  error instanceof ServiceError &&
  error.code === Code.RESOURCE_EXHAUSTED &&
  error.details.reason === "DATABASE_FULL";

/** The order a CreateOrder wrote but could not confirm, as its ABORTED ORDER_NOT_SETTLED names it. */
const unsettledOrder = (error: unknown) =>
  error instanceof ServiceError &&
  error.code === Code.ABORTED &&
  error.details.reason === "ORDER_NOT_SETTLED"
    ? (error.details.metadata as { order_id: string; request_id: string })
    : undefined;

test("a product the database has no room for is RESOURCE_EXHAUSTED, keeps nothing, and is logged with its cause", async (t) => {
  const logs = captureLogger("product");
  const fleet = await startFleet(t, { loggers: { product: logs.logger } });
  const before = (await fleet.products.listProducts({ pageSize: 1000, pageToken: "" })).products;
  const giveRoom = await fill(fleet.product.db);

  const { done, refused } = await untilRefused((n) =>
    addProduct(fleet.products, { name: `Full ${n}`, description: "x".repeat(200) }),
  );
  t.true(isFullRefusal(refused), String(refused));
  t.log(`${done.length} products fitted before the refusal`);
  const listed = (await fleet.products.listProducts({ pageSize: 1000, pageToken: "" })).products;
  t.is(listed.length, before.length + done.length, "only the products answered OK were kept");

  const line = await eventually("the refused CreateProduct's log line", () =>
    logs.lines.find(
      (logged) =>
        logged.method === "/shop.product.v1.ProductService/CreateProduct" &&
        logged.code === "RESOURCE_EXHAUSTED",
    ),
  );
  t.like(line, { level: 40, msg: "rpc failed" });
  t.regex(JSON.stringify(line.err), /SQLITE_FULL/);
  // The alert on a full disk reads this: RESOURCE_EXHAUSTED alone is also a caller's quota.
  t.regex(await fleet.product.metrics.text(), /^shop_db_errors_total\{kind="full"\} [1-9]/m);

  await giveRoom();
  await t.notThrowsAsync(addProduct(fleet.products, { name: "After" }));
});

test("an order the database has no room for is RESOURCE_EXHAUSTED, and every order ends with its stock accounted for", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 1000 });
  const giveRoom = await fill(fleet.order.db);

  const { done, refused } = await untilRefused((n) =>
    fleet.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(mug.productId, 1)],
      requestId: `full-${n}`,
    }),
  );
  // Refused before its order was written, or after: then the answer names the order.
  const unsettled = unsettledOrder(refused);
  t.true(isFullRefusal(refused) || unsettled !== undefined, String(refused));
  t.log(`${done.length} orders fitted before the refusal`);
  t.true(
    done.every((answer) => answer.order?.state === OrderState.ORDER_STATE_CONFIRMED),
    "OK means confirmed",
  );

  // Once there is room, the reconciler settles a named order: confirmed with its stock taken,
  // or failed with its stock given back. An order refused DATABASE_FULL is never confirmed.
  await giveRoom();
  const orders = await eventually(
    "every order settled",
    async () => {
      const listed = (
        await fleet.orders.listOrders({ userId: user.userId, pageSize: 1000, pageToken: "" })
      ).orders;
      return listed.every((order) => order.state !== OrderState.ORDER_STATE_PENDING)
        ? listed
        : undefined;
    },
    { timeoutMs: 15_000 },
  );
  const confirmed = orders.filter((order) => order.state === OrderState.ORDER_STATE_CONFIRMED);
  const namedConfirmed = confirmed.some((order) => order.orderId === unsettled?.order_id);
  t.is(confirmed.length, done.length + (namedConfirmed ? 1 : 0));
  const { product } = await fleet.products.getProduct({ productId: mug.productId });
  t.is(product?.stockQuantity, 1000 - confirmed.length);

  await t.notThrowsAsync(
    fleet.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(mug.productId, 1)],
      requestId: "after-room",
    }),
  );
});

test("an order written but not confirmed for want of room is ABORTED ORDER_NOT_SETTLED, naming the order a resend settles", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 10 });
  const giveRoom = await fullOnConfirm(fleet.order.db);

  // With and without the caller's request_id: the disk's "nothing was written" would be untrue,
  // since the order stands PENDING with its stock taken, and the reconciler would confirm it.
  const named = [];
  for (const requestId of ["", "req-full-on-confirm"]) {
    const error = await t.throwsAsync(
      fleet.orders.createOrder({
        userId: user.userId,
        lines: [orderLine(mug.productId, 2)],
        requestId,
      }),
    );
    const unsettled = unsettledOrder(error);
    if (!unsettled) return t.fail(String(error));
    // Without the caller's, the order's own: the key a resend settles it with.
    if (requestId) t.is(unsettled.request_id, requestId);
    else t.regex(unsettled.request_id ?? "", /^req_[\w-]{16}$/);
    const { order } = await fleet.orders.getOrder({ orderId: unsettled.order_id });
    t.is(order?.state, OrderState.ORDER_STATE_PENDING);
    named.push(unsettled);
  }

  // A resend of the named request_id settles its order: confirmed, its stock taken once.
  await giveRoom();
  for (const { order_id, request_id } of named) {
    const { order } = await fleet.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(mug.productId, 2)],
      requestId: request_id,
    });
    t.is(order?.orderId, order_id);
    t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  }
  const { product } = await fleet.products.getProduct({ productId: mug.productId });
  t.is(product?.stockQuantity, 6);
});
