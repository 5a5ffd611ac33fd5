// Bad input to the order service of a real fleet, forged page tokens, undecodable and oversized
// messages: every rejection is a precise status with google.rpc details (never UNKNOWN or
// INTERNAL), the servers keep serving, and nothing is left half written.
import * as grpc from "@grpc/grpc-js";
import test from "ava";
import {
  CancelOrderRequest,
  CreateOrderRequest,
  GetOrderRequest,
  ListOrdersRequest,
  WatchOrderRequest,
} from "../../gen/ts/shop/order/v1/order.js";
import { ReservationState } from "../../gen/ts/shop/product/v1/inventory.js";
import { ListProductsRequest } from "../../gen/ts/shop/product/v1/product.js";
import { CreateUserRequest, ListUsersRequest } from "../../gen/ts/shop/user/v1/user.js";
import { Code, fromGrpcError, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import {
  domainOf,
  huge,
  MB,
  rawClient,
  snapshot,
  stillServing,
  undecodable,
} from "../helpers/bad-input.js";
import { adminMetadata } from "../helpers/credentials.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { expectInvalid, expectStatus } from "../helpers/status.js";

// Order service

test("CreateOrder refuses missing fields, bad quantities and 1 MB strings, and reserves nothing", async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const a = await addProduct(fleet.products, { stock: 20_000 });
  const b = await addProduct(fleet.products, { stock: 20_000 });
  const before = await snapshot(fleet, [a.productId, b.productId]);
  const order = (request: Parameters<typeof CreateOrderRequest.fromPartial>[0]) =>
    fleet.orders.createOrder(
      CreateOrderRequest.fromPartial({
        userId: shopper.userId,
        requestId: "req-bad",
        lines: [orderLine(a.productId, 1)],
        ...request,
      }),
    );

  await expectInvalid(t, fleet.orders.createOrder(CreateOrderRequest.fromPartial({})), [
    "user_id",
    "lines",
  ]);
  await expectInvalid(t, order({ userId: "" }), ["user_id"]);
  await expectInvalid(t, order({ userId: huge }), ["user_id"]);
  await expectInvalid(t, order({ requestId: huge }), ["request_id"]);
  await expectInvalid(t, order({ lines: [] }), ["lines"]);
  await expectInvalid(t, order({ lines: [orderLine(a.productId, 2), orderLine(b.productId, 0)] }), [
    "lines[1].quantity",
  ]);
  await expectInvalid(t, order({ lines: [orderLine(a.productId, -1)] }), ["lines[0].quantity"]);
  await expectInvalid(t, order({ lines: [orderLine(a.productId, -2_147_483_648)] }), [
    "lines[0].quantity",
  ]);
  await expectInvalid(t, order({ lines: [orderLine(a.productId, 10_001)] }), ["lines[0].quantity"]);
  await expectInvalid(t, order({ lines: [orderLine("", 1)] }), ["lines[0].product_id"]);
  await expectInvalid(t, order({ lines: [orderLine(a.productId, 1), orderLine(huge, 1)] }), [
    "lines[1].product_id",
  ]);
  await expectInvalid(t, order({ lines: [orderLine(a.productId, 1), orderLine(a.productId, 2)] }), [
    "lines[1].product_id",
  ]);
  await expectInvalid(
    t,
    order({ lines: Array.from({ length: 101 }, (_, i) => orderLine(`prd_${i}`, 1)) }),
    ["lines"],
  );

  t.deepEqual(await snapshot(fleet, [a.productId, b.productId]), before);
  // The refused request id was not claimed: the same id now places the order.
  const { order: placed } = await order({});
  t.is(placed?.requestId, "req-bad");
  await stillServing(t, fleet);
});

test("CreateOrder with an unknown product among valid ones holds no stock and writes no order", async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const a = await addProduct(fleet.products, { stock: 5 });
  const b = await addProduct(fleet.products, { stock: 5 });
  const before = await snapshot(fleet, [a.productId, b.productId]);
  const lines = [
    orderLine(a.productId, 2),
    orderLine("prd_AAAAAAAAAAAAAAAAAAAAAA", 1),
    orderLine(b.productId, 3),
  ];
  const error = await expectStatus(
    t,
    fleet.orders.createOrder({ userId: shopper.userId, requestId: "req-unknown-product", lines }),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { product_id: "prd_AAAAAAAAAAAAAAAAAAAAAA" });
  t.deepEqual(await snapshot(fleet, [a.productId, b.productId]), before);

  // The request id is free for a corrected order, which can take all the stock.
  const { order } = await fleet.orders.createOrder({
    userId: shopper.userId,
    requestId: "req-unknown-product",
    lines: [orderLine(a.productId, 5), orderLine(b.productId, 5)],
  });
  t.is(order?.lines.length, 2);
  t.deepEqual((await snapshot(fleet, [a.productId, b.productId])).stock, [0, 0]);
});

test("CreateOrder for an unknown user is NOT_FOUND USER_NOT_FOUND and writes nothing", async (t) => {
  const fleet = await startFleet(t);
  const a = await addProduct(fleet.products, { stock: 5 });
  const before = await snapshot(fleet, [a.productId]);
  const userId = "usr_AAAAAAAAAAAAAAAAAAAAAA";
  const error = await expectStatus(
    t,
    fleet.orders.createOrder({
      userId,
      requestId: "req-ghost",
      lines: [orderLine(a.productId, 1)],
    }),
    Code.NOT_FOUND,
    "USER_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { user_id: userId });
  t.deepEqual(await snapshot(fleet, [a.productId]), before);
  const { orders } = await fleet.orders.listOrders(ListOrdersRequest.fromPartial({ userId }));
  t.deepEqual(orders, []);
});

test("CreateOrder over products in two currencies holds no stock and writes no order", async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const eur = await addProduct(fleet.products, { stock: 5, currencyCode: "EUR" });
  const usd = await addProduct(fleet.products, { stock: 5, currencyCode: "USD" });
  const before = await snapshot(fleet, [eur.productId, usd.productId]);
  await expectStatus(
    t,
    fleet.orders.createOrder({
      userId: shopper.userId,
      requestId: "req-two-currencies",
      lines: [orderLine(eur.productId, 1), orderLine(usd.productId, 1)],
    }),
    Code.FAILED_PRECONDITION,
    "CURRENCY_MISMATCH",
  );
  t.deepEqual((await snapshot(fleet, [eur.productId, usd.productId])).stock, before.stock);
  t.deepEqual((await snapshot(fleet)).orders, []);
  // ReserveStock refused it: no other buyer ever saw the stock gone, even for a moment. The
  // order's release left a tombstone, holding nothing, that refuses a late attempt.
  t.deepEqual(await fleet.product.db("reservation_lines").select("reservation_id"), []);
  t.deepEqual(
    (await fleet.product.db("reservations").select("state")).map((row) => row.state),
    [ReservationState.RESERVATION_STATE_RELEASED],
  );
});

test("OrderService refuses empty, 1 MB and unknown order ids", async (t) => {
  const fleet = await startFleet(t);
  for (const orderId of ["", huge]) {
    await expectInvalid(t, fleet.orders.getOrder({ orderId }), ["order_id"]);
    await expectInvalid(t, fleet.orders.cancelOrder({ orderId }), ["order_id"]);
    const watch = async () => {
      for await (const _ of fleet.orders.watchOrder({ orderId })) t.fail("sent a message");
    };
    await expectInvalid(t, watch(), ["order_id"]);
  }
  const orderId = "ord_AAAAAAAAAAAAAAAAAAAAAA";
  const error = await expectStatus(
    t,
    fleet.orders.getOrder(GetOrderRequest.fromPartial({ orderId })),
    Code.NOT_FOUND,
    "ORDER_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { order_id: orderId });
  t.is(domainOf(error?.details), "shop.order.v1");
  await expectStatus(
    t,
    fleet.orders.cancelOrder(CancelOrderRequest.fromPartial({ orderId })),
    Code.NOT_FOUND,
    "ORDER_NOT_FOUND",
  );
  const watch = async () => {
    for await (const _ of fleet.orders.watchOrder(WatchOrderRequest.fromPartial({ orderId }))) {
      t.fail("sent a message");
    }
  };
  await expectStatus(t, watch(), Code.NOT_FOUND, "ORDER_NOT_FOUND");
  await expectInvalid(t, fleet.orders.listOrders(ListOrdersRequest.fromPartial({ userId: huge })), [
    "user_id",
  ]);
  await stillServing(t, fleet);
});

// Pagination

test("List rpcs refuse a negative page_size and page tokens they never issued", async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  await addUser(fleet.users);
  const p = await addProduct(fleet.products, { stock: 5 });
  await addProduct(fleet.products, { stock: 0 });
  await addProduct(fleet.products, { stock: 5 });
  for (let i = 0; i < 2; i++) {
    await fleet.orders.createOrder({
      userId: shopper.userId,
      requestId: "",
      lines: [orderLine(p.productId, 1)],
    });
  }

  const lists = {
    users: (pageToken: string, pageSize = 1) =>
      fleet.users.listUsers(ListUsersRequest.fromPartial({ pageSize, pageToken })),
    products: (pageToken: string, pageSize = 1) =>
      fleet.products.listProducts(ListProductsRequest.fromPartial({ pageSize, pageToken })),
    orders: (pageToken: string, pageSize = 1) =>
      fleet.orders.listOrders(ListOrdersRequest.fromPartial({ pageSize, pageToken })),
  };
  const flip = (s: string) => (s[0] === "A" ? "B" : "A") + s.slice(1);
  const tokens: Record<string, string> = {};
  for (const [name, list] of Object.entries(lists)) {
    await expectInvalid(t, list("", -1), ["page_size"]);
    await expectInvalid(t, list("", -2_147_483_648), ["page_size"]);
    // Both problems at once: one answer names each.
    await expectInvalid(t, list("garbage", -1), ["page_size", "page_token"]);
    const { nextPageToken: real } = await list("");
    t.not(real, "", name);
    tokens[name] = real;
    const [body = "", mac = ""] = real.split(".");
    for (const forged of [
      "garbage",
      "not.a-token",
      ".",
      huge,
      Buffer.from(JSON.stringify({ c: 1, f: null })).toString("base64url"),
      `${flip(body)}.${mac}`,
      `${body}.${flip(mac)}`,
      `${body}.${mac.slice(0, -4)}`,
      `${body.slice(0, -1)}.${mac}`,
    ]) {
      await expectStatus(t, list(forged), Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", [
        "page_token",
      ]);
    }
  }
  // A real token from one list is refused by another.
  await expectStatus(
    t,
    lists.users(tokens.orders ?? ""),
    Code.INVALID_ARGUMENT,
    "INVALID_PAGE_TOKEN",
  );
  await expectStatus(
    t,
    lists.products(tokens.users ?? ""),
    Code.INVALID_ARGUMENT,
    "INVALID_PAGE_TOKEN",
  );
  await expectStatus(
    t,
    lists.orders(tokens.products ?? ""),
    Code.INVALID_ARGUMENT,
    "INVALID_PAGE_TOKEN",
  );
  // And by the same list with another filter.
  await expectStatus(
    t,
    fleet.products.listProducts(
      ListProductsRequest.fromPartial({ pageToken: tokens.products, inStockOnly: true }),
    ),
    Code.INVALID_ARGUMENT,
    "INVALID_PAGE_TOKEN",
  );
  await expectStatus(
    t,
    fleet.orders.listOrders(
      ListOrdersRequest.fromPartial({ pageToken: tokens.orders, userId: shopper.userId }),
    ),
    Code.INVALID_ARGUMENT,
    "INVALID_PAGE_TOKEN",
  );
  await expectInvalid(
    t,
    fleet.orders.listOrders(
      ListOrdersRequest.fromPartial({ pageToken: tokens.orders, userId: "u".repeat(65) }),
    ),
    ["user_id", "page_token"],
  );
  // The real tokens still work.
  t.is((await lists.users(tokens.users ?? "")).users.length, 1);
  t.is((await lists.products(tokens.products ?? "")).products.length, 1);
  t.is((await lists.orders(tokens.orders ?? "")).orders.length, 1);
  await stillServing(t, fleet);
});

// base64url decoding skips a stray character and ignores a last one's spare bits: each of these
// edits of a real token decodes to its bytes, and is refused all the same.
test("List rpcs refuse a real page token with characters added", async (t) => {
  const fleet = await startFleet(t);
  for (let i = 0; i < 2; i++) await addUser(fleet.users);
  const { nextPageToken: real } = await fleet.users.listUsers(
    ListUsersRequest.fromPartial({ pageSize: 1 }),
  );
  const spare =
    real.length % 4 === 0 ? [] : [`${real.slice(0, -1)}${real.at(-1) === "A" ? "B" : "A"}`];
  for (const tampered of [`${real}A`, `${real}==`, `${real}.extra`, `\n${real}`, ...spare]) {
    await expectStatus(
      t,
      fleet.users.listUsers(ListUsersRequest.fromPartial({ pageToken: tampered })),
      Code.INVALID_ARGUMENT,
      "INVALID_PAGE_TOKEN",
    );
  }
});

// Undecodable messages

const rawCalls: [string, "user" | "product" | "order"][] = [
  ["/shop.user.v1.UserService/CreateUser", "user"],
  ["/shop.user.v1.UserService/GetUser", "user"],
  ["/shop.user.v1.UserService/UpdateUser", "user"],
  ["/shop.product.v1.ProductService/CreateProduct", "product"],
  ["/shop.product.v1.InventoryService/ReserveStock", "product"],
  ["/shop.order.v1.OrderService/CreateOrder", "order"],
  ["/shop.order.v1.OrderService/ListOrders", "order"],
];

test("Undecodable request bytes are INVALID_ARGUMENT MALFORMED_REQUEST and change nothing", async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  await fleet.orders.createOrder({
    userId: shopper.userId,
    requestId: "",
    lines: [orderLine(mug.productId, 1)],
  });
  const before = await snapshot(fleet, [mug.productId]);

  const raw = {
    user: rawClient(t, fleet.user.server.address),
    product: rawClient(t, fleet.product.server.address),
    order: rawClient(t, fleet.order.server.address),
  };
  for (const [path, service] of rawCalls) {
    for (const [name, bytes] of undecodable) {
      const { error } = await raw[service](path, bytes);
      t.truthy(error, `${path} accepted ${name}`);
      t.is(Code[error?.code ?? -1], "INVALID_ARGUMENT", `${path}, ${name}: ${error?.message}`);
      t.is(error?.details.reason, "MALFORMED_REQUEST", `${path}, ${name}`);
      t.is(domainOf(error?.details), `shop.${service}.v1`);
    }
  }
  // An empty body is a valid, empty message: its fields are missing, not malformed.
  const { error } = await raw.order("/shop.order.v1.OrderService/CreateOrder", Buffer.alloc(0));
  t.is(error?.code, Code.INVALID_ARGUMENT);
  t.deepEqual(
    error?.details.fieldViolations?.map((v) => v.field),
    ["user_id", "lines"],
  );

  t.deepEqual(await snapshot(fleet, [mug.productId]), before);
  await stillServing(t, fleet);
});

test("An undecodable WatchOrder request ends the stream with MALFORMED_REQUEST", async (t) => {
  const fleet = await startFleet(t);
  const client = new grpc.Client(fleet.order.server.address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const identity = (b: Buffer) => b;
  const stream = client.makeServerStreamRequest(
    "/shop.order.v1.OrderService/WatchOrder",
    identity,
    identity,
    Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
    adminMetadata(),
    { deadline: Date.now() + 10_000 },
  );
  const messages: unknown[] = [];
  stream.on("data", (message) => messages.push(message));
  const error = await new Promise<ServiceError>((resolve) =>
    stream.on("error", (e: grpc.ServiceError) => resolve(fromGrpcError(e))),
  );
  t.deepEqual(messages, []);
  t.is(error.code, Code.INVALID_ARGUMENT);
  t.is(error.details.reason, "MALFORMED_REQUEST");
  await stillServing(t, fleet);
});

test("A message over the 4 MB limit is RESOURCE_EXHAUSTED and the server keeps serving", async (t) => {
  const fleet = await startFleet(t);
  const before = await snapshot(fleet);
  const error = await t.throwsAsync(
    fleet.users.createUser(
      CreateUserRequest.fromPartial({
        user: { email: "big@example.com", displayName: "x".repeat(5 * MB) },
      }),
    ),
    { instanceOf: ServiceError },
  );
  t.is(Code[error?.code ?? -1], "RESOURCE_EXHAUSTED", error?.message);
  t.deepEqual(await snapshot(fleet), before);
  await stillServing(t, fleet);
});
