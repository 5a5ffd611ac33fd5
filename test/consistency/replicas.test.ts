// Two replicas of every service on one database (one SQLite file per service here; one
// PostgreSQL database in replicas.postgres.test.ts), each call sent to one replica or the other:
// stock is never oversold, one request_id makes one order, no update is lost, and transactions
// that take the same rows in different orders never deadlock.
import { readFile } from "node:fs/promises";
import test from "ava";
import { type Order, OrderServiceService, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { InventoryServiceService } from "../../gen/ts/shop/product/v1/inventory.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { type Client, createClient } from "../../kit/client/index.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { testCallers } from "../helpers/credentials.js";
import { orderLine, type ProcessFleet, spawnProcessFleet } from "../helpers/fleet.js";
import { onPostgres, postgres } from "../helpers/storage.js";

interface Replicas {
  fleet: ProcessFleet;
  users: Client<typeof UserServiceService>[];
  products: Client<typeof ProductServiceService>[];
  inventory: Client<typeof InventoryServiceService>[];
  orders: Client<typeof OrderServiceService>[];
}

let shared: Promise<Replicas> | undefined;

test.before(() => {
  shared = (async () => {
    // Dozens of calls queue on one product's row at once, on a machine that may be busy: the
    // deadlines are generous, since what is tested is what the answers are, not how soon.
    const fleet = await spawnProcessFleet({
      replicas: { user: 2, product: 2, order: 2 },
      env: { SHOP_DEPENDENCY_TIMEOUT_MS: "30000", SHOP_DATABASE_STATEMENT_TIMEOUT_MS: "30000" },
    });
    const each = <S extends Parameters<typeof createClient>[0]>(definition: S, name: string) =>
      [0, 1].map((i) =>
        createClient(definition, fleet.address(name as "user", i), {
          middleware: testCallers(60_000),
        }),
      );
    return {
      fleet,
      users: each(UserServiceService, "user"),
      products: each(ProductServiceService, "product"),
      inventory: each(InventoryServiceService, "product"),
      orders: each(OrderServiceService, "order"),
    };
  })();
  return shared;
});

test.after.always(async () => {
  const replicas = await shared?.catch(() => undefined);
  for (const client of [
    ...(replicas?.users ?? []),
    ...(replicas?.products ?? []),
    ...(replicas?.inventory ?? []),
    ...(replicas?.orders ?? []),
  ]) {
    client.close();
  }
  await replicas?.fleet.stop();
});

const codeOf = (error: unknown) =>
  error instanceof ServiceError ? Code[error.code] : String((error as Error).message);

test("60 orders for 10 units over both order and both product replicas: exactly 10 go through", async (t) => {
  const { users, products, orders } = (await shared) as Replicas;
  const shopper = await addUser(users[0] as Client<typeof UserServiceService>);
  const mug = await addProduct(products[0] as Client<typeof ProductServiceService>, { stock: 10 });
  let lowest = 10;
  let watching = true;
  const watch = (async () => {
    while (watching) {
      for (const replica of products) {
        const { product } = await replica.getProduct({ productId: mug.productId });
        lowest = Math.min(lowest, product?.stockQuantity ?? -1);
      }
    }
  })();
  const outcomes = await Promise.all(
    Array.from({ length: 60 }, (_, i) =>
      (orders[i % 2] as Client<typeof OrderServiceService>)
        .createOrder({
          userId: shopper.userId,
          lines: [orderLine(mug.productId, 1)],
          requestId: `oversell-${i}`,
        })
        .then(
          ({ order }) => Code[order?.state === OrderState.ORDER_STATE_CONFIRMED ? 0 : 2],
          codeOf,
        ),
    ),
  );
  watching = false;
  await watch;
  const counts = Object.fromEntries(
    [...new Set(outcomes)].map((code) => [code, outcomes.filter((o) => o === code).length]),
  );
  t.deepEqual(counts, { OK: 10, FAILED_PRECONDITION: 50 });
  for (const replica of products) {
    t.is((await replica.getProduct({ productId: mug.productId })).product?.stockQuantity, 0);
  }
  t.true(lowest >= 0, `stock was seen at ${lowest}`);
});

test("one request_id sent to both order replicas at once makes one order", async (t) => {
  const { users, products, orders } = (await shared) as Replicas;
  const shopper = await addUser(users[1] as Client<typeof UserServiceService>);
  const mug = await addProduct(products[1] as Client<typeof ProductServiceService>, { stock: 100 });
  for (let round = 0; round < 5; round++) {
    const request = {
      userId: shopper.userId,
      lines: [orderLine(mug.productId, 2)],
      requestId: `one-order-${round}`,
    };
    const ids = new Set<string>();
    await Promise.all(
      Array.from({ length: 10 }, (_, i) =>
        (orders[i % 2] as Client<typeof OrderServiceService>).createOrder(request).then(
          ({ order }) => {
            t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
            ids.add(order?.orderId ?? "");
          },
          // Calls that meet the others mid-flight may be told to retry; they place nothing.
          (error) => t.is(codeOf(error), "ABORTED"),
        ),
      ),
    );
    t.true(ids.size <= 1, `request ${round} made ${ids.size} orders`);
  }
  const { orders: placed } = await (orders[0] as Client<typeof OrderServiceService>).listOrders({
    userId: shopper.userId,
    pageSize: 50,
  });
  t.is(placed.length, 5);
  t.is(
    (
      await (products[0] as Client<typeof ProductServiceService>).getProduct({
        productId: mug.productId,
      })
    ).product?.stockQuantity,
    90,
  );
});

test("two bodies under one request_id on both replicas: each call gets the placed order or ALREADY_EXISTS by its own body", async (t) => {
  const { users, products, orders } = (await shared) as Replicas;
  const shopper = await addUser(users[0] as Client<typeof UserServiceService>);
  const mug = await addProduct(products[0] as Client<typeof ProductServiceService>, { stock: 100 });
  const [first, second] = orders as [
    Client<typeof OrderServiceService>,
    Client<typeof OrderServiceService>,
  ];
  for (let round = 0; round < 8; round++) {
    const one = {
      userId: shopper.userId,
      lines: [orderLine(mug.productId, 1)],
      requestId: `two-${round}`,
    };
    const two = { ...one, lines: [orderLine(mug.productId, 2)] };
    // One body on one replica; on the other, the other body and then the first one again.
    const sent = [
      [one, first.createOrder(one)],
      [two, second.createOrder(two)],
      [one, second.createOrder(one)],
    ] as const;
    const answers = await Promise.all(
      sent.map(([body, call]) =>
        call.then(
          ({ order }) => ({ body, order }),
          (error) => ({ body, code: codeOf(error) }),
        ),
      ),
    );
    const placed = answers.find((answer) => "order" in answer);
    if (!placed) continue;
    const quantity = (placed.body.lines[0] as { quantity: number }).quantity;
    for (const answer of answers) {
      if ("code" in answer && answer.code === "ABORTED") continue;
      const mine = (answer.body.lines[0] as { quantity: number }).quantity === quantity;
      t.deepEqual(
        "order" in answer ? answer.order?.orderId : answer.code,
        mine ? (placed as { order: { orderId: string } }).order.orderId : "ALREADY_EXISTS",
        `round ${round}: a call with ${mine ? "the placed" : "the other"} body`,
      );
    }
  }
});

test("a watch on one replica streams every state of a cancel run on the other", async (t) => {
  const { users, products, orders } = (await shared) as Replicas;
  const [first, second] = orders as [
    Client<typeof OrderServiceService>,
    Client<typeof OrderServiceService>,
  ];
  const shopper = await addUser(users[0] as Client<typeof UserServiceService>);
  const mug = await addProduct(products[0] as Client<typeof ProductServiceService>, { stock: 10 });
  for (let round = 0; round < 3; round++) {
    const { order } = await first.createOrder({
      userId: shopper.userId,
      lines: [orderLine(mug.productId, 1)],
      requestId: `watched-${round}`,
    });
    const orderId = order?.orderId ?? "";
    const seen: Order[] = [];
    for await (const update of first.watchOrder({ orderId })) {
      seen.push(update.order as Order);
      if (seen.length === 1) await second.cancelOrder({ orderId });
    }
    t.deepEqual(
      seen.map((update) => update.state),
      [
        OrderState.ORDER_STATE_CONFIRMED,
        OrderState.ORDER_STATE_CANCELLING,
        OrderState.ORDER_STATE_CANCELLED,
      ],
      `round ${round}`,
    );
    const times = seen.map((update) => update.updateTime?.getTime() ?? 0);
    t.deepEqual(
      [...times].sort((a, b) => a - b),
      times,
      "each state's time, in order",
    );
  }
});

test("orders naming the same products in opposite orders, on both replicas, never deadlock", async (t) => {
  const { users, products, orders } = (await shared) as Replicas;
  const shopper = await addUser(users[0] as Client<typeof UserServiceService>);
  const [a, b, c] = await Promise.all(
    [0, 1, 2].map(() =>
      addProduct(products[0] as Client<typeof ProductServiceService>, { stock: 1_000 }),
    ),
  );
  const ids = [a, b, c].map((product) => product?.productId ?? "");
  const deadlocks = async () =>
    onPostgres()
      ? ((await readFile((await postgres()).logFile, "utf8")).match(/deadlock detected/g) ?? [])
          .length
      : 0;
  const before = await deadlocks();
  const outcomes = await Promise.all(
    Array.from({ length: 60 }, (_, i) => {
      // Every line order of the three products, so that each pair is taken both ways at once.
      const order = [ids, [...ids].reverse(), [ids[1], ids[2], ids[0]]][i % 3] as string[];
      return (orders[i % 2] as Client<typeof OrderServiceService>)
        .createOrder({
          userId: shopper.userId,
          lines: order.map((productId) => orderLine(productId, 1)),
          requestId: `both-ways-${i}`,
        })
        .then(() => "OK", codeOf);
    }),
  );
  t.deepEqual(
    outcomes.filter((outcome) => outcome !== "OK"),
    [],
  );
  for (const productId of ids) {
    const { product } = await (products[1] as Client<typeof ProductServiceService>).getProduct({
      productId,
    });
    t.is(product?.stockQuantity, 940);
  }
  t.is(await deadlocks(), before, "the server detected no deadlock");
});

test("no update is lost: fields changed on both replicas and stock moved on both all stay", async (t) => {
  const { products, inventory } = (await shared) as Replicas;
  const [first, second] = products as [
    Client<typeof ProductServiceService>,
    Client<typeof ProductServiceService>,
  ];
  const [firstInventory, secondInventory] = inventory as [
    Client<typeof InventoryServiceService>,
    Client<typeof InventoryServiceService>,
  ];
  const mug = await addProduct(first, { stock: 500, name: "Mug", amountMinor: "100" });
  const { productId } = mug;
  // Replica 1 renames it and replica 2 reprices it, while both hold, release and commit stock.
  const writes = [
    first.updateProduct({ product: { productId, name: "Big mug" }, updateMask: ["name"] }),
    second.updateProduct({
      product: { productId, price: { currencyCode: "EUR", amountMinor: "3000000000000007" } },
      updateMask: ["price"],
    }),
    first.updateProduct({
      product: { productId, description: "Stoneware" },
      updateMask: ["description"],
    }),
    ...Array.from({ length: 40 }, async (_, i) => {
      const replica = i % 2 ? firstInventory : secondInventory;
      const other = i % 2 ? secondInventory : firstInventory;
      const reservationId = `no-lost-update-${productId}-${i}`;
      await replica.reserveStock({
        reservationId,
        lines: [orderLine(productId, 3)],
        ttl: { seconds: "60", nanos: 0 },
      });
      // A third of them given back, a third committed, a third left held.
      if (i % 3 === 0) await other.releaseReservation({ reservationId });
      if (i % 3 === 1) await other.commitReservation({ reservationId });
    }),
  ];
  await Promise.all(writes);
  const released = Array.from({ length: 40 }, (_, i) => i).filter((i) => i % 3 === 0).length;
  const { product } = await second.getProduct({ productId });
  t.is(product?.name, "Big mug");
  t.is(product?.description, "Stoneware");
  t.deepEqual(product?.price, { currencyCode: "EUR", amountMinor: "3000000000000007" });
  t.is(product?.stockQuantity, 500 - 3 * (40 - released));
});

test("one email created on both user replicas at once: one user, the rest ALREADY_EXISTS", async (t) => {
  const { users } = (await shared) as Replicas;
  const email = `twice.${Date.now()}@example.com`;
  const outcomes = await Promise.all(
    Array.from({ length: 10 }, (_, i) =>
      (users[i % 2] as Client<typeof UserServiceService>)
        .createUser({ user: { email, displayName: `Twin ${i}` } })
        .then(() => "OK", codeOf),
    ),
  );
  t.deepEqual(outcomes.sort(), ["OK", ...Array(9).fill("ALREADY_EXISTS")].sort());
});
