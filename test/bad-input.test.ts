// Bad input against the real mesh: every rejection is a precise status with google.rpc details
// (never UNKNOWN or INTERNAL), the servers keep serving, and nothing is left half written.
import * as grpc from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { HealthCheckResponse_ServingStatus, HealthService } from "../gen/ts/health/v1/health.js";
import {
  CancelOrderRequest,
  CreateOrderRequest,
  GetOrderRequest,
  ListOrdersRequest,
  WatchOrderRequest,
} from "../gen/ts/shop/order/v1/order.js";
import {
  CommitReservationRequest,
  CreateProductRequest,
  ListProductsRequest,
  type Product,
  ReleaseReservationRequest,
  ReserveStockRequest,
  UpdateProductRequest,
} from "../gen/ts/shop/product/v1/product.js";
import {
  CreateUserRequest,
  ListUsersRequest,
  UpdateUserRequest,
} from "../gen/ts/shop/user/v1/user.js";
import { createClient } from "../kit/client.js";
import { Code, type ErrorDetails, fromGrpcError, ServiceError } from "../kit/errors.js";
import {
  clientsFor,
  createProduct,
  createUser,
  orderLine,
  startMesh,
  type TestMesh,
} from "./helpers/mesh.js";

const MB = 1_000_000;
const huge = "x".repeat(MB);

/**
 * Asserts that `call` fails with `code` and `reason`, and, when `fields` is given, that its
 * BadRequest names exactly those fields.
 */
async function rejects(
  t: ExecutionContext,
  call: Promise<unknown>,
  code: Code,
  reason: string,
  fields?: string[],
): Promise<ServiceError | undefined> {
  const error = await t.throwsAsync(call, { instanceOf: ServiceError });
  t.is(Code[error?.code ?? -1], Code[code], error?.message.slice(0, 200));
  t.is(error?.details.reason, reason);
  if (fields) {
    t.deepEqual(
      error?.details.fieldViolations?.map((v) => v.field),
      fields,
    );
  }
  return error;
}

const invalid = (t: ExecutionContext, call: Promise<unknown>, fields: string[]) =>
  rejects(t, call, Code.INVALID_ARGUMENT, "INVALID_ARGUMENT", fields);

/** What the mesh holds, read only through its rpcs. */
async function snapshot(mesh: TestMesh, productIds: string[] = []) {
  const [users, products, orders] = await Promise.all([
    mesh.users.listUsers(ListUsersRequest.fromPartial({ pageSize: 1000 })),
    mesh.products.listProducts(ListProductsRequest.fromPartial({ pageSize: 1000 })),
    mesh.orders.listOrders(ListOrdersRequest.fromPartial({ pageSize: 1000 })),
  ]);
  const stock = await Promise.all(
    productIds.map(
      async (productId) => (await mesh.products.getProduct({ productId })).product?.stockQuantity,
    ),
  );
  return {
    users: users.users.map((u) => u.userId),
    products: products.products.map((p) => [p.productId, p.stockQuantity, p.updateTime]),
    orders: orders.orders.map((o) => o.orderId),
    stock,
  };
}

/** Each server still answers health checks and a real read. */
async function stillServing(t: ExecutionContext, mesh: TestMesh) {
  for (const [service, name] of [
    [mesh.user, "shop.user.v1.UserService"],
    [mesh.product, "shop.product.v1.ProductService"],
    [mesh.order, "shop.order.v1.OrderService"],
  ] as const) {
    const health = createClient(HealthService, service.server.address, {
      serviceName: "grpc.health.v1.Health",
    });
    t.teardown(() => health.close());
    const { status } = await health.check({ service: name });
    t.is(status, HealthCheckResponse_ServingStatus.SERVING, name);
  }
  await mesh.users.listUsers(ListUsersRequest.fromPartial({}));
  await mesh.products.listProducts(ListProductsRequest.fromPartial({}));
  await mesh.orders.listOrders(ListOrdersRequest.fromPartial({}));
}

/** A plain grpc-js client that sends raw bytes as the request message, past every serializer. */
function rawClient(t: ExecutionContext, address: string) {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const identity = (b: Buffer) => b;
  return (path: string, bytes: Buffer) =>
    new Promise<{ error?: ServiceError; response?: Buffer }>((resolve) => {
      client.makeUnaryRequest(
        path,
        identity,
        identity,
        bytes,
        new grpc.Metadata(),
        { deadline: Date.now() + 10_000 },
        (error, response) =>
          resolve(error ? { error: fromGrpcError(error) } : { ...(response && { response }) }),
      );
    });
}

/** Bytes that are not a protobuf message of any type. */
const undecodable: [string, Buffer][] = [
  [
    "a length-delimited field longer than the message",
    Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
  ],
  ["a truncated varint", Buffer.from([0x08, 0xff])],
  ["a truncated string", Buffer.from([0x0a, 0x05, 0x61, 0x62])],
  ["an invalid wire type", Buffer.from([0x0f])],
  ["a truncated nested message", Buffer.from([0x12, 0x05, 0x0a])],
];

const domainOf = (details: ErrorDetails | undefined) =>
  (details as (ErrorDetails & { domain?: string }) | undefined)?.domain;

// User service

test("UserService refuses missing, empty and 1 MB fields, naming them, and writes nothing", async (t) => {
  const mesh = await startMesh(t);
  const ada = await createUser(mesh.users);
  const before = await snapshot(mesh);
  const create = (user: Parameters<typeof CreateUserRequest.fromPartial>[0]["user"]) =>
    mesh.users.createUser(CreateUserRequest.fromPartial({ user }));

  await invalid(t, mesh.users.createUser(CreateUserRequest.fromPartial({})), ["user"]);
  await invalid(t, create({}), ["user.email", "user.display_name"]);
  await invalid(t, create({ email: "a@example.com", displayName: huge }), ["user.display_name"]);
  await invalid(t, create({ email: `${huge}@example.com`, displayName: "A" }), ["user.email"]);
  await invalid(t, create({ email: huge, displayName: huge }), ["user.email", "user.display_name"]);
  const error = await invalid(t, create({ email: "a@example.com", displayName: huge }), [
    "user.display_name",
  ]);
  t.is(domainOf(error?.details), "shop.user.v1");
  t.true((error?.message.length ?? 0) < 1000, "the error does not echo the 1 MB value");

  for (const userId of ["", huge]) {
    await invalid(t, mesh.users.getUser({ userId }), ["user_id"]);
    await invalid(t, mesh.users.deleteUser({ userId }), ["user_id"]);
    await invalid(
      t,
      mesh.users.updateUser(
        UpdateUserRequest.fromPartial({
          user: { userId, displayName: "X" },
          updateMask: ["display_name"],
        }),
      ),
      ["user.user_id"],
    );
  }
  const update = (user: object, updateMask: string[] | undefined) =>
    mesh.users.updateUser(
      UpdateUserRequest.fromPartial({ user: { userId: ada.userId, ...user }, updateMask }),
    );
  await invalid(
    t,
    mesh.users.updateUser(UpdateUserRequest.fromPartial({ updateMask: ["email"] })),
    ["user"],
  );
  await invalid(t, update({ displayName: huge }, ["display_name"]), ["user.display_name"]);
  await invalid(t, update({ email: huge }, ["email"]), ["user.email"]);
  await invalid(t, update({ displayName: "X" }, undefined), ["update_mask"]);
  await invalid(t, update({ userId: "usr_other" }, ["user_id"]), ["update_mask"]);

  t.deepEqual(await snapshot(mesh), before);
  t.deepEqual((await mesh.users.getUser({ userId: ada.userId })).user, ada);
  await stillServing(t, mesh);
});

test("UserService answers unknown ids with NOT_FOUND USER_NOT_FOUND and changes nothing", async (t) => {
  const mesh = await startMesh(t);
  const ada = await createUser(mesh.users);
  const before = await snapshot(mesh);
  const unknown = "usr_AAAAAAAAAAAAAAAAAAAAAA";
  const error = await rejects(
    t,
    mesh.users.getUser({ userId: unknown }),
    Code.NOT_FOUND,
    "USER_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { user_id: unknown });
  await rejects(t, mesh.users.deleteUser({ userId: unknown }), Code.NOT_FOUND, "USER_NOT_FOUND");
  await rejects(
    t,
    mesh.users.updateUser(
      UpdateUserRequest.fromPartial({
        user: { userId: unknown, email: ada.email },
        updateMask: ["email"],
      }),
    ),
    Code.NOT_FOUND,
    "USER_NOT_FOUND",
  );
  await rejects(
    t,
    mesh.users.createUser(
      CreateUserRequest.fromPartial({
        user: { email: ada.email.toUpperCase(), displayName: "Twin" },
      }),
    ),
    Code.ALREADY_EXISTS,
    "EMAIL_TAKEN",
  );
  t.deepEqual(await snapshot(mesh), before);
  await stillServing(t, mesh);
});

// An error repeats what was wrong with the request: an unknown update_mask path verbatim, and one
// field violation per bad line. When that passes roughly 50 KB, the status no longer fits the
// HTTP/2 trailers: the client never receives it, the call runs into its deadline, and the
// connection stalls for every other call on it. Fix: bound the violations and their descriptions
// in kit/validate.ts and the message in kit/server.ts, then make this a plain test.
test("Oversized complaints are INVALID_ARGUMENT, not a stalled connection", async (t) => {
  const mesh = await startMesh(t);
  const ada = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 5 });
  // A fresh channel per case, so that one stalled connection cannot fail the others; each
  // channel must still serve a read afterwards.
  const fresh = (address: string) =>
    clientsFor(t, { user: address, product: address, order: address });
  // Long enough for a loaded machine; a stalled connection never answers at all.
  const deadline = { timeoutMs: 5_000 };
  const cases: [
    string,
    (c: ReturnType<typeof fresh>) => Promise<unknown>,
    (c: ReturnType<typeof fresh>) => Promise<unknown>,
  ][] = [
    [
      mesh.user.server.address,
      (c) =>
        c.users.updateUser(
          UpdateUserRequest.fromPartial({
            user: { userId: ada.userId, displayName: "X" },
            updateMask: [huge],
          }),
          deadline,
        ),
      (c) => c.users.getUser({ userId: ada.userId }, deadline),
    ],
    [
      mesh.product.server.address,
      (c) =>
        c.products.updateProduct(
          UpdateProductRequest.fromPartial({
            product: { productId: mug.productId, name: "X" },
            updateMask: Array.from({ length: 2_000 }, (_, i) => `field_${i}`),
          }),
          deadline,
        ),
      (c) => c.products.getProduct({ productId: mug.productId }, deadline),
    ],
    [
      mesh.order.server.address,
      (c) =>
        c.orders.createOrder(
          CreateOrderRequest.fromPartial({
            userId: ada.userId,
            lines: Array.from({ length: 5_000 }, (_, i) => orderLine(`prd_${i}`, 0)),
          }),
          deadline,
        ),
      (c) => c.orders.listOrders(ListOrdersRequest.fromPartial({}), deadline),
    ],
  ];
  await Promise.all(
    cases.map(async ([address, complain, read]) => {
      const client = fresh(address);
      await rejects(t, complain(client), Code.INVALID_ARGUMENT, "INVALID_ARGUMENT");
      await t.notThrowsAsync(read(client));
    }),
  );
});

// Product service

test("ProductService refuses bad products, naming the field, and writes nothing", async (t) => {
  const mesh = await startMesh(t);
  const before = await snapshot(mesh);
  const create = (override: Partial<Product>) =>
    mesh.products.createProduct(
      CreateProductRequest.fromPartial({
        product: {
          name: "Mug",
          price: { currencyCode: "EUR", amountMinor: "100" },
          stockQuantity: 1,
          ...override,
        },
      }),
    );
  const money = (currencyCode: string, amountMinor: string) => ({
    price: { currencyCode, amountMinor },
  });

  await invalid(t, mesh.products.createProduct(CreateProductRequest.fromPartial({})), ["product"]);
  await invalid(t, create({ name: "" }), ["product.name"]);
  await invalid(t, create({ name: huge }), ["product.name"]);
  await invalid(t, create({ description: huge }), ["product.description"]);
  await invalid(t, create({ price: undefined }), ["product.price"]);
  for (const code of ["eur", "EURO", "", "E1R", "€€€"]) {
    await invalid(t, create(money(code, "100")), ["product.price.currency_code"]);
  }
  for (const amount of ["-1", "-9223372036854775808", "9223372036854775807", "9007199254740992"]) {
    await invalid(t, create(money("EUR", amount)), ["product.price.amount_minor"]);
  }
  await invalid(t, create({ stockQuantity: -1 }), ["product.stock_quantity"]);
  await invalid(t, create({ stockQuantity: -2_147_483_648 }), ["product.stock_quantity"]);
  await invalid(t, create({ stockQuantity: 1_000_000_001 }), ["product.stock_quantity"]);
  await invalid(t, create({ name: "", ...money("eur", "-5"), stockQuantity: -1 }), [
    "product.name",
    "product.price.currency_code",
    "product.price.amount_minor",
    "product.stock_quantity",
  ]);

  t.deepEqual(await snapshot(mesh), before);
  await stillServing(t, mesh);
});

test("ProductService refuses bad updates and unknown ids, and changes nothing", async (t) => {
  const mesh = await startMesh(t);
  const mug = await createProduct(mesh.products, { stock: 7 });
  const before = await snapshot(mesh, [mug.productId]);
  const update = (product: Partial<Product>, updateMask: string[]) =>
    mesh.products.updateProduct(
      UpdateProductRequest.fromPartial({
        product: { productId: mug.productId, ...product },
        updateMask,
      }),
    );

  await invalid(t, update({ stockQuantity: -1 }, ["stock_quantity"]), ["product.stock_quantity"]);
  await invalid(t, update({ name: huge }, ["name"]), ["product.name"]);
  await invalid(t, update({ price: { currencyCode: "eur", amountMinor: "1" } }, ["price"]), [
    "product.price.currency_code",
  ]);
  await invalid(t, update({ price: { currencyCode: "EUR", amountMinor: "-1" } }, ["price"]), [
    "product.price.amount_minor",
  ]);
  await invalid(t, update({ name: "X" }, []), ["update_mask"]);
  await invalid(t, update({ name: "X" }, ["name", "product_id"]), ["update_mask"]);
  // Every field check runs before the write: one bad field keeps the good one from landing.
  await invalid(t, update({ name: "New name", stockQuantity: -1 }, ["name", "stock_quantity"]), [
    "product.stock_quantity",
  ]);

  for (const productId of ["", huge]) {
    await invalid(t, mesh.products.getProduct({ productId }), ["product_id"]);
    await invalid(t, update({ productId, name: "X" }, ["name"]), ["product.product_id"]);
  }
  const unknown = "prd_AAAAAAAAAAAAAAAAAAAAAA";
  const error = await rejects(
    t,
    mesh.products.getProduct({ productId: unknown }),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { product_id: unknown });
  await rejects(
    t,
    update({ productId: unknown, name: "X" }, ["name"]),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );

  t.deepEqual(await snapshot(mesh, [mug.productId]), before);
  t.deepEqual((await mesh.products.getProduct({ productId: mug.productId })).product, mug);
  await stillServing(t, mesh);
});

test("ProductService refuses bad reservations and holds nothing", async (t) => {
  const mesh = await startMesh(t);
  const a = await createProduct(mesh.products, { stock: 10 });
  const b = await createProduct(mesh.products, { stock: 10 });
  const before = await snapshot(mesh, [a.productId, b.productId]);
  const reserve = (reservationId: string, lines: [string, number][]) =>
    mesh.products.reserveStock(
      ReserveStockRequest.fromPartial({
        reservationId,
        lines: lines.map(([productId, quantity]) => ({ productId, quantity })),
      }),
    );

  await invalid(t, reserve("", [[a.productId, 1]]), ["reservation_id"]);
  await invalid(t, reserve(huge, [[a.productId, 1]]), ["reservation_id"]);
  await invalid(t, reserve("r-1", []), ["lines"]);
  await invalid(
    t,
    reserve("r-1", [
      [a.productId, 1],
      [b.productId, 0],
    ]),
    ["lines[1].quantity"],
  );
  await invalid(t, reserve("r-1", [[a.productId, -5]]), ["lines[0].quantity"]);
  await invalid(t, reserve("r-1", [[a.productId, 10_001]]), ["lines[0].quantity"]);
  await invalid(t, reserve("r-1", [[huge, 1]]), ["lines[0].product_id"]);
  await invalid(
    t,
    reserve("r-1", [
      [a.productId, 1],
      [a.productId, 1],
    ]),
    ["lines[1].product_id"],
  );
  await invalid(
    t,
    reserve(
      "r-1",
      Array.from({ length: 101 }, (_, i): [string, number] => [`prd_${i}`, 1]),
    ),
    ["lines"],
  );
  await invalid(
    t,
    mesh.products.reserveStock(
      ReserveStockRequest.fromPartial({
        reservationId: "r-1",
        lines: [{ productId: a.productId, quantity: 1 }],
        ttl: { seconds: "-1", nanos: 0 },
      }),
    ),
    ["ttl"],
  );
  await rejects(
    t,
    reserve("r-1", [
      [a.productId, 1],
      ["prd_AAAAAAAAAAAAAAAAAAAAAA", 1],
      [b.productId, 1],
    ]),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );
  for (const reservationId of ["", huge]) {
    await invalid(t, mesh.products.commitReservation({ reservationId }), ["reservation_id"]);
    await invalid(t, mesh.products.releaseReservation({ reservationId }), ["reservation_id"]);
  }
  await rejects(
    t,
    mesh.products.commitReservation(CommitReservationRequest.fromPartial({ reservationId: "r-1" })),
    Code.NOT_FOUND,
    "RESERVATION_NOT_FOUND",
  );
  t.deepEqual(await snapshot(mesh, [a.productId, b.productId]), before);

  // None of the refusals claimed the id.
  const { reservation } = await reserve("r-1", [[a.productId, 1]]);
  t.is(reservation?.lines.length, 1);
  await mesh.products.releaseReservation(
    ReleaseReservationRequest.fromPartial({ reservationId: "r-1" }),
  );
  await stillServing(t, mesh);
});

// Order service

test("CreateOrder refuses missing fields, bad quantities and 1 MB strings, and reserves nothing", async (t) => {
  const mesh = await startMesh(t);
  const shopper = await createUser(mesh.users);
  const a = await createProduct(mesh.products, { stock: 20_000 });
  const b = await createProduct(mesh.products, { stock: 20_000 });
  const before = await snapshot(mesh, [a.productId, b.productId]);
  const order = (request: Parameters<typeof CreateOrderRequest.fromPartial>[0]) =>
    mesh.orders.createOrder(
      CreateOrderRequest.fromPartial({
        userId: shopper.userId,
        requestId: "req-bad",
        lines: [orderLine(a.productId, 1)],
        ...request,
      }),
    );

  await invalid(t, mesh.orders.createOrder(CreateOrderRequest.fromPartial({})), [
    "user_id",
    "lines",
  ]);
  await invalid(t, order({ userId: "" }), ["user_id"]);
  await invalid(t, order({ userId: huge }), ["user_id"]);
  await invalid(t, order({ requestId: huge }), ["request_id"]);
  await invalid(t, order({ lines: [] }), ["lines"]);
  await invalid(t, order({ lines: [orderLine(a.productId, 2), orderLine(b.productId, 0)] }), [
    "lines[1].quantity",
  ]);
  await invalid(t, order({ lines: [orderLine(a.productId, -1)] }), ["lines[0].quantity"]);
  await invalid(t, order({ lines: [orderLine(a.productId, -2_147_483_648)] }), [
    "lines[0].quantity",
  ]);
  await invalid(t, order({ lines: [orderLine(a.productId, 10_001)] }), ["lines[0].quantity"]);
  await invalid(t, order({ lines: [orderLine("", 1)] }), ["lines[0].product_id"]);
  await invalid(t, order({ lines: [orderLine(a.productId, 1), orderLine(huge, 1)] }), [
    "lines[1].product_id",
  ]);
  await invalid(t, order({ lines: [orderLine(a.productId, 1), orderLine(a.productId, 2)] }), [
    "lines[1].product_id",
  ]);
  await invalid(
    t,
    order({ lines: Array.from({ length: 101 }, (_, i) => orderLine(`prd_${i}`, 1)) }),
    ["lines"],
  );

  t.deepEqual(await snapshot(mesh, [a.productId, b.productId]), before);
  // The refused request id was not claimed: the same id now places the order.
  const { order: placed } = await order({});
  t.is(placed?.requestId, "req-bad");
  await stillServing(t, mesh);
});

test("CreateOrder with an unknown product among valid ones holds no stock and writes no order", async (t) => {
  const mesh = await startMesh(t);
  const shopper = await createUser(mesh.users);
  const a = await createProduct(mesh.products, { stock: 5 });
  const b = await createProduct(mesh.products, { stock: 5 });
  const before = await snapshot(mesh, [a.productId, b.productId]);
  const lines = [
    orderLine(a.productId, 2),
    orderLine("prd_AAAAAAAAAAAAAAAAAAAAAA", 1),
    orderLine(b.productId, 3),
  ];
  const error = await rejects(
    t,
    mesh.orders.createOrder({ userId: shopper.userId, requestId: "req-unknown-product", lines }),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { product_id: "prd_AAAAAAAAAAAAAAAAAAAAAA" });
  t.deepEqual(await snapshot(mesh, [a.productId, b.productId]), before);

  // The request id is free for a corrected order, which can take all the stock.
  const { order } = await mesh.orders.createOrder({
    userId: shopper.userId,
    requestId: "req-unknown-product",
    lines: [orderLine(a.productId, 5), orderLine(b.productId, 5)],
  });
  t.is(order?.lines.length, 2);
  t.deepEqual((await snapshot(mesh, [a.productId, b.productId])).stock, [0, 0]);
});

test("CreateOrder for an unknown user is NOT_FOUND USER_NOT_FOUND and writes nothing", async (t) => {
  const mesh = await startMesh(t);
  const a = await createProduct(mesh.products, { stock: 5 });
  const before = await snapshot(mesh, [a.productId]);
  const userId = "usr_AAAAAAAAAAAAAAAAAAAAAA";
  const error = await rejects(
    t,
    mesh.orders.createOrder({ userId, requestId: "req-ghost", lines: [orderLine(a.productId, 1)] }),
    Code.NOT_FOUND,
    "USER_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { user_id: userId });
  t.deepEqual(await snapshot(mesh, [a.productId]), before);
  const { orders } = await mesh.orders.listOrders(ListOrdersRequest.fromPartial({ userId }));
  t.deepEqual(orders, []);
});

test("CreateOrder over products in two currencies holds no stock and writes no order", async (t) => {
  const mesh = await startMesh(t);
  const shopper = await createUser(mesh.users);
  const eur = await createProduct(mesh.products, { stock: 5, currencyCode: "EUR" });
  const usd = await createProduct(mesh.products, { stock: 5, currencyCode: "USD" });
  const before = await snapshot(mesh, [eur.productId, usd.productId]);
  await rejects(
    t,
    mesh.orders.createOrder({
      userId: shopper.userId,
      requestId: "req-two-currencies",
      lines: [orderLine(eur.productId, 1), orderLine(usd.productId, 1)],
    }),
    Code.FAILED_PRECONDITION,
    "CURRENCY_MISMATCH",
  );
  t.deepEqual((await snapshot(mesh, [eur.productId, usd.productId])).stock, before.stock);
  t.deepEqual((await snapshot(mesh)).orders, []);
});

test("OrderService refuses empty, 1 MB and unknown order ids", async (t) => {
  const mesh = await startMesh(t);
  for (const orderId of ["", huge]) {
    await invalid(t, mesh.orders.getOrder({ orderId }), ["order_id"]);
    await invalid(t, mesh.orders.cancelOrder({ orderId }), ["order_id"]);
    const watch = async () => {
      for await (const _ of mesh.orders.watchOrder({ orderId })) t.fail("sent a message");
    };
    await invalid(t, watch(), ["order_id"]);
  }
  const orderId = "ord_AAAAAAAAAAAAAAAAAAAAAA";
  const error = await rejects(
    t,
    mesh.orders.getOrder(GetOrderRequest.fromPartial({ orderId })),
    Code.NOT_FOUND,
    "ORDER_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { order_id: orderId });
  t.is(domainOf(error?.details), "shop.order.v1");
  await rejects(
    t,
    mesh.orders.cancelOrder(CancelOrderRequest.fromPartial({ orderId })),
    Code.NOT_FOUND,
    "ORDER_NOT_FOUND",
  );
  const watch = async () => {
    for await (const _ of mesh.orders.watchOrder(WatchOrderRequest.fromPartial({ orderId }))) {
      t.fail("sent a message");
    }
  };
  await rejects(t, watch(), Code.NOT_FOUND, "ORDER_NOT_FOUND");
  await invalid(t, mesh.orders.listOrders(ListOrdersRequest.fromPartial({ userId: huge })), [
    "user_id",
  ]);
  await stillServing(t, mesh);
});

// Pagination

test("List rpcs refuse a negative page_size and page tokens they never issued", async (t) => {
  const mesh = await startMesh(t);
  const shopper = await createUser(mesh.users);
  await createUser(mesh.users);
  const p = await createProduct(mesh.products, { stock: 5 });
  await createProduct(mesh.products, { stock: 0 });
  await createProduct(mesh.products, { stock: 5 });
  for (let i = 0; i < 2; i++) {
    await mesh.orders.createOrder({
      userId: shopper.userId,
      requestId: "",
      lines: [orderLine(p.productId, 1)],
    });
  }

  const lists = {
    users: (pageToken: string, pageSize = 1) =>
      mesh.users.listUsers(ListUsersRequest.fromPartial({ pageSize, pageToken })),
    products: (pageToken: string, pageSize = 1) =>
      mesh.products.listProducts(ListProductsRequest.fromPartial({ pageSize, pageToken })),
    orders: (pageToken: string, pageSize = 1) =>
      mesh.orders.listOrders(ListOrdersRequest.fromPartial({ pageSize, pageToken })),
  };
  const flip = (s: string) => (s[0] === "A" ? "B" : "A") + s.slice(1);
  const tokens: Record<string, string> = {};
  for (const [name, list] of Object.entries(lists)) {
    await invalid(t, list("", -1), ["page_size"]);
    await invalid(t, list("", -2_147_483_648), ["page_size"]);
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
      await rejects(t, list(forged), Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN", ["page_token"]);
    }
  }
  // A real token from one list is refused by another.
  await rejects(t, lists.users(tokens.orders ?? ""), Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN");
  await rejects(t, lists.products(tokens.users ?? ""), Code.INVALID_ARGUMENT, "INVALID_PAGE_TOKEN");
  await rejects(
    t,
    lists.orders(tokens.products ?? ""),
    Code.INVALID_ARGUMENT,
    "INVALID_PAGE_TOKEN",
  );
  // And by the same list with another filter.
  await rejects(
    t,
    mesh.products.listProducts(
      ListProductsRequest.fromPartial({ pageToken: tokens.products, inStockOnly: true }),
    ),
    Code.INVALID_ARGUMENT,
    "INVALID_PAGE_TOKEN",
  );
  await rejects(
    t,
    mesh.orders.listOrders(
      ListOrdersRequest.fromPartial({ pageToken: tokens.orders, userId: shopper.userId }),
    ),
    Code.INVALID_ARGUMENT,
    "INVALID_PAGE_TOKEN",
  );
  // The real tokens still work.
  t.is((await lists.users(tokens.users ?? "")).users.length, 1);
  t.is((await lists.products(tokens.products ?? "")).products.length, 1);
  t.is((await lists.orders(tokens.orders ?? "")).orders.length, 1);
  await stillServing(t, mesh);
});

// A signed token's MAC is compared after base64url decoding, which ignores trailing bits and
// characters, and only the first two dot-separated parts are read: these edits of a real token
// are accepted as the original. Fix in kit/page-token.ts, then make this a plain test.
test("List rpcs refuse a real page token with characters added", async (t) => {
  const mesh = await startMesh(t);
  for (let i = 0; i < 2; i++) await createUser(mesh.users);
  const { nextPageToken: real } = await mesh.users.listUsers(
    ListUsersRequest.fromPartial({ pageSize: 1 }),
  );
  for (const tampered of [`${real}A`, `${real}==`, `${real}.extra`, real.replace(".", ".\n")]) {
    await rejects(
      t,
      mesh.users.listUsers(ListUsersRequest.fromPartial({ pageToken: tampered })),
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
  ["/shop.product.v1.ProductService/ReserveStock", "product"],
  ["/shop.order.v1.OrderService/CreateOrder", "order"],
  ["/shop.order.v1.OrderService/ListOrders", "order"],
];

test("Undecodable request bytes are INVALID_ARGUMENT MALFORMED_REQUEST and change nothing", async (t) => {
  const mesh = await startMesh(t);
  const shopper = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 5 });
  await mesh.orders.createOrder({
    userId: shopper.userId,
    requestId: "",
    lines: [orderLine(mug.productId, 1)],
  });
  const before = await snapshot(mesh, [mug.productId]);

  const raw = {
    user: rawClient(t, mesh.user.server.address),
    product: rawClient(t, mesh.product.server.address),
    order: rawClient(t, mesh.order.server.address),
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

  t.deepEqual(await snapshot(mesh, [mug.productId]), before);
  await stillServing(t, mesh);
});

test("An undecodable WatchOrder request ends the stream with MALFORMED_REQUEST", async (t) => {
  const mesh = await startMesh(t);
  const client = new grpc.Client(mesh.order.server.address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const identity = (b: Buffer) => b;
  const stream = client.makeServerStreamRequest(
    "/shop.order.v1.OrderService/WatchOrder",
    identity,
    identity,
    Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
    new grpc.Metadata(),
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
  await stillServing(t, mesh);
});

test("A message over the 4 MB limit is RESOURCE_EXHAUSTED and the server keeps serving", async (t) => {
  const mesh = await startMesh(t);
  const before = await snapshot(mesh);
  const error = await t.throwsAsync(
    mesh.users.createUser(
      CreateUserRequest.fromPartial({
        user: { email: "big@example.com", displayName: "x".repeat(5 * MB) },
      }),
    ),
    { instanceOf: ServiceError },
  );
  t.is(Code[error?.code ?? -1], "RESOURCE_EXHAUSTED", error?.message);
  t.deepEqual(await snapshot(mesh), before);
  await stillServing(t, mesh);
});
