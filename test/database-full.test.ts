// A database with no room left for a write: a full disk, here SQLite's page limit
// (`max_page_count`), which fails a write with the same SQLITE_FULL. The caller gets
// RESOURCE_EXHAUSTED with an ErrorInfo, not INTERNAL; nothing of the refused write is kept; the
// log says why at warn level; and once there is room again, the service writes as before.
import test from "ava";
import { OrderState } from "../gen/ts/shop/order/v1/order.js";
import type { Knex } from "../kit/db.js";
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

const isFullRefusal = (error: unknown) =>
  error instanceof ServiceError &&
  error.code === Code.RESOURCE_EXHAUSTED &&
  error.details.reason === "DATABASE_FULL";

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
  t.true(isFullRefusal(refused), String(refused));
  t.log(`${done.length} orders fitted before the refusal`);
  t.true(
    done.every((answer) => answer.order?.state === OrderState.ORDER_STATE_CONFIRMED),
    "OK means confirmed",
  );

  // The refused order was either never written, or is settled by the reconciler once there is
  // room: confirmed with its stock taken, or failed with its stock given back.
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
  t.true(confirmed.length >= done.length && confirmed.length <= done.length + 1);
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
