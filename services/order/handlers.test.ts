// OrderService handlers called directly, each test on its own in-memory database. The saga behind
// CreateOrder talks to real user and product servers on port 0. Its failure scenarios live in
// test/saga/; here are the rpcs' contracts: validation, lookups, lists, the happy paths.
import test from "ava";
import {
  CreateOrderRequest,
  GetOrderRequest,
  ListOrdersRequest,
} from "../../gen/ts/shop/order/v1/order.js";
import { Code } from "../../kit/errors.js";
import { encodePageToken } from "../../kit/page-token.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { tamperedTokens } from "../../test/helpers/page-tokens.js";
import { expectInvalid, expectStatus } from "../../test/helpers/status.js";
import { CONFIRMED, chars, ctx, PENDING, setup, shareDependencies } from "./test-setup.js";

shareDependencies(test);

// CreateOrder

test("CreateOrder confirms an order with ids, price snapshots, total and times", async (t) => {
  const { handlers, users, products, order, stock } = await setup(t);
  const shopper = await addUser(users);
  const mug = await addProduct(products, { stock: 10, amountMinor: "500" });
  const tea = await addProduct(products, { stock: 5, amountMinor: "250" });
  const before = Date.now();

  const placed = await order(
    shopper.userId,
    [
      [tea.productId, 3],
      [mug.productId, 2],
    ],
    "req-happy",
  );
  t.regex(placed.orderId, /^ord_[A-Za-z0-9_-]{16}$/);
  t.is(placed.userId, shopper.userId);
  t.is(placed.requestId, "req-happy");
  t.is(placed.state, CONFIRMED);
  t.deepEqual(placed.lines, [
    {
      productId: tea.productId,
      quantity: 3,
      unitPrice: { currencyCode: "EUR", amountMinor: "250" },
    },
    {
      productId: mug.productId,
      quantity: 2,
      unitPrice: { currencyCode: "EUR", amountMinor: "500" },
    },
  ]);
  t.deepEqual(placed.total, { currencyCode: "EUR", amountMinor: "1750" });
  t.true((placed.createTime?.getTime() ?? 0) >= before);
  t.true((placed.updateTime?.getTime() ?? 0) >= (placed.createTime?.getTime() ?? 0));
  t.deepEqual(await stock(mug.productId, tea.productId), [8, 2]);

  const { order: read } = await handlers.getOrder(
    GetOrderRequest.fromPartial({ orderId: placed.orderId }),
    ctx("GetOrder"),
  );
  // The answer is built from what the saga wrote, not read back: it must be exactly what is stored.
  t.deepEqual(read, placed);
});

test("CreateOrder without a request_id is not deduplicated", async (t) => {
  const { users, products, order, stock, count } = await setup(t);
  const shopper = await addUser(users);
  const mug = await addProduct(products, { stock: 10 });
  const a = await order(shopper.userId, [[mug.productId, 1]]);
  const b = await order(shopper.userId, [[mug.productId, 1]]);
  t.not(a.orderId, b.orderId);
  t.deepEqual(await stock(mug.productId), [8]);
  t.is(await count(), 2);
});

test("CreateOrder accepts the boundary sizes", async (t) => {
  const { users, products, order } = await setup(t);
  const shopper = await addUser(users);
  const mug = await addProduct(products, { stock: 10_000, amountMinor: "1" });
  const placed = await order(shopper.userId, [[mug.productId, 10_000]], chars(64));
  t.is(placed.requestId.length, 64);
  t.deepEqual(placed.total, { currencyCode: "EUR", amountMinor: "10000" });
});

const line = (productId: string, quantity: number) => ({ productId, quantity });
const badOrders: [
  string,
  { userId?: string; requestId?: string; lines?: ReturnType<typeof line>[] },
  string[],
][] = [
  ["an empty user_id", { userId: "" }, ["user_id"]],
  ["a 65-character user_id", { userId: chars(65) }, ["user_id"]],
  ["a 65-character request_id", { requestId: chars(65) }, ["request_id"]],
  ["no lines", { lines: [] }, ["lines"]],
  ["101 lines", { lines: Array.from({ length: 101 }, (_, i) => line(`p${i}`, 1)) }, ["lines"]],
  ["a zero quantity", { lines: [line("A", 1), line("B", 0)] }, ["lines[1].quantity"]],
  ["a negative quantity", { lines: [line("A", -1)] }, ["lines[0].quantity"]],
  ["a quantity above 10,000", { lines: [line("A", 10_001)] }, ["lines[0].quantity"]],
  ["an empty product_id", { lines: [line("A", 1), line("", 1)] }, ["lines[1].product_id"]],
  ["a 65-character product_id", { lines: [line(chars(65), 1)] }, ["lines[0].product_id"]],
  [
    "a product twice",
    { lines: [line("A", 1), line("B", 1), line("A", 1)] },
    ["lines[2].product_id"],
  ],
  [
    "several bad fields at once",
    { userId: "", requestId: chars(65), lines: [line("", 0)] },
    ["user_id", "request_id", "lines[0].product_id", "lines[0].quantity"],
  ],
];

for (const [name, fields, violations] of badOrders) {
  test(`CreateOrder refuses ${name} before reserving anything`, async (t) => {
    const { handlers, users, products, stock, count } = await setup(t);
    const shopper = await addUser(users);
    const a = await addProduct(products, { stock: 20_000 });
    const b = await addProduct(products, { stock: 20_000 });
    const ids = new Map([
      ["A", a.productId],
      ["B", b.productId],
    ]);
    const request = CreateOrderRequest.fromPartial({
      userId: fields.userId ?? shopper.userId,
      requestId: fields.requestId ?? "req-bad",
      lines: (fields.lines ?? [line("A", 1)]).map((l) => ({
        productId: ids.get(l.productId) ?? l.productId,
        quantity: l.quantity,
      })),
    });
    await expectInvalid(t, handlers.createOrder(request, ctx("CreateOrder")), violations);
    t.deepEqual(await stock(a.productId, b.productId), [20_000, 20_000]);
    t.is(await count(), 0);
  });
}

// GetOrder

test("GetOrder refuses an empty or too long id", async (t) => {
  const { handlers } = await setup(t);
  for (const orderId of ["", chars(65)]) {
    await expectInvalid(
      t,
      handlers.getOrder(GetOrderRequest.fromPartial({ orderId }), ctx("GetOrder")),
      ["order_id"],
    );
  }
});

test("GetOrder of an unknown id is NOT_FOUND with reason ORDER_NOT_FOUND", async (t) => {
  const { handlers } = await setup(t);
  const error = await expectStatus(
    t,
    handlers.getOrder(GetOrderRequest.fromPartial({ orderId: "ord_missing" }), ctx("GetOrder")),
    Code.NOT_FOUND,
    "ORDER_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { order_id: "ord_missing" });
});

test("GetOrder returns a stored order as written", async (t) => {
  const { handlers, seed } = await setup(t);
  const written = await seed("usr_a");
  const { order } = await handlers.getOrder(
    GetOrderRequest.fromPartial({ orderId: written.orderId }),
    ctx("GetOrder"),
  );
  t.deepEqual(order, written);
  t.is(order?.state, PENDING);
  // Priced only once its stock is taken.
  t.is(order?.total, undefined);
  t.is(order?.lines[0]?.unitPrice, undefined);
});

// ListOrders

async function listAll(
  handlers: Awaited<ReturnType<typeof setup>>["handlers"],
  pageSize: number,
  userId = "",
) {
  const ids: string[] = [];
  const sizes: number[] = [];
  let pageToken = "";
  do {
    const page = await handlers.listOrders(
      ListOrdersRequest.fromPartial({ pageSize, pageToken, userId }),
      ctx("ListOrders"),
    );
    sizes.push(page.orders.length);
    ids.push(...page.orders.map((o) => o.orderId));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return { ids, sizes };
}

test("ListOrders pages through every order newest first", async (t) => {
  const { handlers, seed } = await setup(t);
  const written: string[] = [];
  for (let i = 0; i < 7; i++) written.push((await seed(i % 2 ? "usr_b" : "usr_a")).orderId);
  const newestFirst = [...written].reverse();
  t.deepEqual(await listAll(handlers, 3), { ids: newestFirst, sizes: [3, 3, 1] });
  t.deepEqual(await listAll(handlers, 0), { ids: newestFirst, sizes: [7] });
  t.deepEqual(await listAll(handlers, 7), { ids: newestFirst, sizes: [7] });
});

test("ListOrders with user_id returns only that user's orders, on every page", async (t) => {
  const { handlers, seed } = await setup(t);
  const byUser: Record<string, string[]> = { usr_a: [], usr_b: [] };
  for (let i = 0; i < 9; i++) {
    const userId = i % 3 ? "usr_a" : "usr_b";
    byUser[userId]?.unshift((await seed(userId)).orderId);
  }
  t.deepEqual(await listAll(handlers, 2, "usr_a"), { ids: byUser.usr_a, sizes: [2, 2, 2] });
  t.deepEqual(await listAll(handlers, 2, "usr_b"), { ids: byUser.usr_b, sizes: [2, 1] });
  t.deepEqual(await listAll(handlers, 2, "usr_nobody"), { ids: [], sizes: [0] });
});

test("ListOrders' page token tells its caller nothing: not the place among every user's orders, the rpc or the filter", async (t) => {
  const { handlers, seed } = await setup(t);
  for (let i = 0; i < 3; i++) await seed("usr_a");
  const tokens = await Promise.all(
    [1, 2].map(async () => {
      const { nextPageToken } = await handlers.listOrders(
        ListOrdersRequest.fromPartial({ pageSize: 1, userId: "usr_a" }),
        ctx("ListOrders"),
      );
      return nextPageToken;
    }),
  );
  const [token = "", again = ""] = tokens;
  t.not(token, again, "each token of the same page is sealed afresh");
  const bytes = Buffer.from(token, "base64url").toString("latin1");
  for (const readable of ["ListOrders", "usr_a", '"c":', "userId"]) {
    t.false(bytes.includes(readable), readable);
  }
  const next = await handlers.listOrders(
    ListOrdersRequest.fromPartial({ pageSize: 1, userId: "usr_a", pageToken: again }),
    ctx("ListOrders"),
  );
  t.is(next.orders.length, 1);
});

test("ListOrders refuses a token reused with another user_id", async (t) => {
  const { handlers, seed } = await setup(t);
  for (let i = 0; i < 4; i++) await seed(i % 2 ? "usr_b" : "usr_a");
  const first = (userId: string) =>
    handlers.listOrders(ListOrdersRequest.fromPartial({ pageSize: 1, userId }), ctx("ListOrders"));
  for (const [issuedFor, usedFor] of [
    ["usr_a", "usr_b"],
    ["usr_a", ""],
    ["", "usr_a"],
  ] as const) {
    const { nextPageToken } = await first(issuedFor);
    t.not(nextPageToken, "");
    await expectInvalid(
      t,
      handlers.listOrders(
        ListOrdersRequest.fromPartial({ pageSize: 1, pageToken: nextPageToken, userId: usedFor }),
        ctx("ListOrders"),
      ),
      ["page_token"],
      "INVALID_PAGE_TOKEN",
    );
  }
});

test("ListOrders refuses a negative page_size, a long user_id and forged tokens", async (t) => {
  const { handlers, seed } = await setup(t);
  for (let i = 0; i < 2; i++) await seed("usr_a");
  const list = (request: Partial<ListOrdersRequest>) =>
    handlers.listOrders(ListOrdersRequest.fromPartial(request), ctx("ListOrders"));
  await expectInvalid(t, list({ pageSize: -1 }), ["page_size"]);
  await expectInvalid(t, list({ userId: chars(65) }), ["user_id"]);
  await expectInvalid(t, list({ userId: chars(65), pageSize: -1 }), ["user_id", "page_size"]);
  const { nextPageToken: real } = await list({ pageSize: 1 });
  for (const pageToken of [
    "garbage",
    ...tamperedTokens(real),
    encodePageToken("/shop.user.v1.UserService/ListUsers", 1),
    encodePageToken("/shop.product.v1.ProductService/ListProducts", 1, { inStockOnly: false }),
    // ListOrders' own filter, from another list.
    encodePageToken("/shop.user.v1.UserService/ListUsers", 1, { userId: "" }),
    chars(2000),
  ]) {
    await expectInvalid(t, list({ pageToken }), ["page_token"], "INVALID_PAGE_TOKEN");
  }
});
