// The order saga of DESIGN.md §2 against real user, product and order servers.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { credentials } from "@grpc/grpc-js";
import test from "ava";
import { HealthCheckResponse_ServingStatus, HealthService } from "../gen/ts/health/v1/health.js";
import {
  type CreateOrderResponse,
  OrderServiceClient,
  OrderState,
} from "../gen/ts/shop/order/v1/order.js";
import { ReservationState } from "../gen/ts/shop/product/v1/product.js";
import { createClient } from "../kit/client.js";
import { Code, ServiceError } from "../kit/errors.js";
import { freePorts, spawnService, stopProcess, waitServing } from "../scripts/lib/launcher.js";
import { createOrderService } from "../services/order/service.js";
import { userService } from "../services/user/service.js";
import {
  captureLogger,
  clientsFor,
  createProduct,
  createUser,
  orderLine,
  start,
  startMesh,
} from "./helpers/mesh.js";

const stockOf = async (mesh: { products: ReturnType<typeof clientsFor>["products"] }, id: string) =>
  (await mesh.products.getProduct({ productId: id })).product?.stockQuantity;

test("an order is confirmed at the reserved price and takes the stock", async (t) => {
  const mesh = await startMesh(t);
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 5, amountMinor: "1250" });
  const kettle = await createProduct(mesh.products, { stock: 2, amountMinor: "4900" });

  const { order } = await mesh.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 2), orderLine(kettle.productId, 1)],
    requestId: "happy-1",
  });
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.deepEqual(order?.total, { currencyCode: "EUR", amountMinor: "7400" });
  t.deepEqual(
    order?.lines.map((line) => [line.productId, line.quantity, line.unitPrice?.amountMinor]),
    [
      [mug.productId, 2, "1250"],
      [kettle.productId, 1, "4900"],
    ],
  );
  t.is(await stockOf(mesh, mug.productId), 3);
  t.is(await stockOf(mesh, kettle.productId), 1);

  // A later price change does not touch the order's snapshot.
  await mesh.products.updateProduct({
    product: { ...mug, price: { currencyCode: "EUR", amountMinor: "9999" } },
    updateMask: ["price"],
  });
  const again = await mesh.orders.getOrder({ orderId: order?.orderId ?? "" });
  t.is(again.order?.lines[0]?.unitPrice?.amountMinor, "1250");
});

test("the generated grpc-js client class talks to the order service as is", async (t) => {
  const mesh = await startMesh(t);
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products);
  const client = new OrderServiceClient(mesh.order.server.address, credentials.createInsecure());
  t.teardown(() => client.close());
  const response = await new Promise<CreateOrderResponse>((resolve, reject) =>
    client.createOrder(
      { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: "generated-1" },
      (error, reply) => (error ? reject(error) : resolve(reply)),
    ),
  );
  t.is(response.order?.state, OrderState.ORDER_STATE_CONFIRMED);
});

test("ten concurrent retries of one request_id create one order", async (t) => {
  const mesh = await startMesh(t);
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 20 });
  const request = {
    userId: user.userId,
    lines: [orderLine(mug.productId, 3)],
    requestId: "retry-me",
  };

  const results = await Promise.all(
    Array.from({ length: 10 }, () => mesh.orders.createOrder(request)),
  );
  const ids = new Set(results.map((result) => result.order?.orderId));
  t.is(ids.size, 1);
  const listed = await mesh.orders.listOrders({ userId: user.userId, pageSize: 50, pageToken: "" });
  t.is(listed.orders.length, 1);
  t.is(await stockOf(mesh, mug.productId), 17);

  // And once more after the fact, and with other lines under the same id.
  const later = await mesh.orders.createOrder(request);
  t.true(ids.has(later.order?.orderId));
  const reused = await t.throwsAsync(
    mesh.orders.createOrder({ ...request, lines: [orderLine(mug.productId, 1)] }),
    { instanceOf: ServiceError },
  );
  t.is(reused?.code, Code.ALREADY_EXISTS);
  t.is(reused?.details.reason, "REQUEST_ID_REUSED");
});

test("50 parallel orders for 10 units: exactly 10 succeed and stock never goes below 0", async (t) => {
  const mesh = await startMesh(t);
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 10 });

  let lowest = 10;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      lowest = Math.min(lowest, (await stockOf(mesh, mug.productId)) ?? -1);
    }
  })();
  const outcomes = await Promise.allSettled(
    Array.from({ length: 50 }, (_, i) =>
      mesh.orders.createOrder({
        userId: user.userId,
        lines: [orderLine(mug.productId, 1)],
        requestId: `rush-${i}`,
      }),
    ),
  );
  polling = false;
  await poller;

  const won = outcomes.filter((outcome) => outcome.status === "fulfilled");
  const lost = outcomes.flatMap((outcome) =>
    outcome.status === "rejected" ? [outcome.reason] : [],
  );
  t.is(won.length, 10);
  t.is(lost.length, 40);
  for (const error of lost) {
    t.is(error.code, Code.FAILED_PRECONDITION);
    t.is(error.details.reason, "INSUFFICIENT_STOCK");
    t.is(error.details.preconditionViolations?.[0]?.subject, mug.productId);
  }
  t.is(await stockOf(mesh, mug.productId), 0);
  t.true(lowest >= 0);
});

test("an unknown user fails the order before any stock is held", async (t) => {
  const mesh = await startMesh(t);
  const mug = await createProduct(mesh.products, { stock: 4 });
  const error = await t.throwsAsync(
    mesh.orders.createOrder({
      userId: "usr_nobody",
      lines: [orderLine(mug.productId, 1)],
      requestId: "",
    }),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.NOT_FOUND);
  t.is(error?.details.reason, "USER_NOT_FOUND");
  t.is(await stockOf(mesh, mug.productId), 4);
  const listed = await mesh.orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
  t.is(listed.orders.length, 0);
});

test("a commit that fails mid-way releases the stock, and a retry of the request succeeds", async (t) => {
  const mesh = await startMesh(t);
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 5 });
  mesh.product.server.faults.set("CommitReservation", { code: Code.UNAVAILABLE });

  const request = {
    userId: user.userId,
    lines: [orderLine(mug.productId, 2)],
    requestId: "flaky-1",
  };
  const error = await t.throwsAsync(mesh.orders.createOrder(request), { instanceOf: ServiceError });
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(error?.details.reason, "DEPENDENCY_UNAVAILABLE");
  t.regex(error?.message ?? "", /product service is unavailable/);
  t.is(await stockOf(mesh, mug.productId), 5);
  const failed = await mesh.orders.listOrders({ userId: user.userId, pageSize: 10, pageToken: "" });
  t.deepEqual(
    failed.orders.map((order) => order.state),
    [OrderState.ORDER_STATE_FAILED],
  );

  mesh.product.server.faults.clear();
  const { order } = await mesh.orders.createOrder(request);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(mesh, mug.productId), 3);
});

test("a reservation that fails leaves no order behind", async (t) => {
  const mesh = await startMesh(t);
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 5 });
  mesh.product.server.faults.set("ReserveStock", { code: Code.UNAVAILABLE });
  const error = await t.throwsAsync(
    mesh.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(mug.productId, 1)],
      requestId: "r",
    }),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.UNAVAILABLE);
  const listed = await mesh.orders.listOrders({ userId: user.userId, pageSize: 10, pageToken: "" });
  t.is(listed.orders.length, 0);
  t.is(await stockOf(mesh, mug.productId), 5);
});

test("a held reservation expires after its TTL and gives its stock back", async (t) => {
  const mesh = await startMesh(t);
  const mug = await createProduct(mesh.products, { stock: 5 });
  const { reservation } = await mesh.products.reserveStock({
    reservationId: "expiring-1",
    lines: [orderLine(mug.productId, 4)],
    ttl: { seconds: "1", nanos: 0 },
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_HELD);
  t.is(await stockOf(mesh, mug.productId), 1);

  let stock = 1;
  for (let i = 0; i < 50 && stock !== 5; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
    stock = (await stockOf(mesh, mug.productId)) ?? -1;
  }
  t.is(stock, 5);
  const error = await t.throwsAsync(
    mesh.products.commitReservation({ reservationId: "expiring-1" }),
    {
      instanceOf: ServiceError,
    },
  );
  t.is(error?.code, Code.FAILED_PRECONDITION);
  t.is(error?.details.reason, "RESERVATION_NOT_HELD");
});

test("an order whose reservation expires before the commit fails and keeps no stock", async (t) => {
  const mesh = await startMesh(t, { order: { reservationTtlMs: 1_000 } });
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 3 });
  mesh.product.server.faults.set("CommitReservation", { delayMs: 1_500 });
  const error = await t.throwsAsync(
    mesh.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(mug.productId, 2)],
      requestId: "slow",
    }),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.FAILED_PRECONDITION);
  t.is(error?.details.reason, "RESERVATION_NOT_HELD");
  t.is(await stockOf(mesh, mug.productId), 3);
});

test("the caller's deadline reaches the user and product services", async (t) => {
  const logs = { user: captureLogger("user"), product: captureLogger("product") };
  const mesh = await startMesh(t, {
    loggers: { user: logs.user.logger, product: logs.product.logger },
  });
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 3 });
  mesh.product.server.faults.set("ReserveStock", { delayMs: 8_000 });

  // The client fixes its deadline when the call starts: somewhere in [earliest, latest].
  const earliest = Date.now() + 2_000;
  const call = mesh.orders.createOrder(
    { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: "hurry" },
    { timeoutMs: 2_000 },
  );
  const latest = Date.now() + 2_000;
  const error = await t.throwsAsync(call, { instanceOf: ServiceError });
  t.is(error?.code, Code.DEADLINE_EXCEEDED);

  // The per-call log line is written when the downstream call ends, just after ours.
  const deadlineOf = async (lines: Record<string, unknown>[], method: string) => {
    for (let i = 0; i < 40; i++) {
      const line = lines.find((entry) => entry.method === method);
      if (line) return Date.parse(String(line.deadline));
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    return Number.NaN;
  };
  // The downstream calls carried the caller's deadline, not the order service's 5 s default.
  // Each hop re-anchors the remaining time on arrival, so allow it to land a little later.
  for (const [lines, method] of [
    [logs.user.lines, "/shop.user.v1.UserService/GetUser"],
    [logs.product.lines, "/shop.product.v1.ProductService/ReserveStock"],
  ] as const) {
    const deadline = await deadlineOf(lines, method);
    t.true(deadline >= earliest - 50, `${method} deadline ${deadline - earliest} ms early`);
    t.true(deadline <= latest + 500, `${method} deadline ${deadline - latest} ms late`);
  }
  // The abandoned reservation is compensated: nothing stays held.
  for (let i = 0; i < 30 && (await stockOf(mesh, mug.productId)) !== 3; i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  t.is(await stockOf(mesh, mug.productId), 3);
});

test("cancelling returns the stock, and WatchOrder streams the change then ends", async (t) => {
  const mesh = await startMesh(t);
  const user = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 4 });
  const { order } = await mesh.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 3)],
    requestId: "cancel-me",
  });
  const orderId = order?.orderId ?? "";
  const seen: OrderState[] = [];
  const watching = (async () => {
    for await (const update of mesh.orders.watchOrder({ orderId })) {
      seen.push(update.order?.state ?? OrderState.ORDER_STATE_UNSPECIFIED);
      if (seen.length === 1) await mesh.orders.cancelOrder({ orderId });
    }
  })();
  await watching;
  t.deepEqual(seen, [OrderState.ORDER_STATE_CONFIRMED, OrderState.ORDER_STATE_CANCELLED]);
  t.is(await stockOf(mesh, mug.productId), 4);

  const again = await mesh.orders.cancelOrder({ orderId });
  t.is(again.order?.state, OrderState.ORDER_STATE_CANCELLED);
  t.is(await stockOf(mesh, mug.productId), 4);
});

test("with the product service down, CreateOrder is UNAVAILABLE and writes nothing", async (t) => {
  const user = await start(t, userService);
  const order = await start(
    t,
    createOrderService({ userAddr: user.server.address, productAddr: "127.0.0.1:1" }),
  );
  const { users, orders } = clientsFor(t, {
    user: user.server.address,
    order: order.server.address,
  });
  const shopper = await createUser(users);
  const error = await t.throwsAsync(
    orders.createOrder({
      userId: shopper.userId,
      lines: [orderLine("prd_x", 1)],
      requestId: "down",
    }),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(error?.details.reason, "DEPENDENCY_UNAVAILABLE");
  t.is(error?.details.metadata?.dependency, "product");
  const listed = await orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
  t.is(listed.orders.length, 0);
});

test("killing the product service mid-flight loses no stock once it is back", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-kill-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const [port] = (await freePorts(1)) as [number];
  const productSpec = {
    name: "product",
    service: "product" as const,
    host: "127.0.0.1",
    port,
    env: { SHOP_DATABASE: path.join(dir, "product.sqlite"), SHOP_RESERVATION_SWEEP_MS: "100" },
  };
  let product = spawnService(productSpec, dir);
  t.teardown(() => stopProcess(product));
  await waitServing(product);

  const user = await start(t, userService);
  const order = await start(
    t,
    createOrderService({
      userAddr: user.server.address,
      productAddr: `127.0.0.1:${port}`,
      reservationTtlMs: 1_500,
      reconcileMs: 200,
    }),
  );
  const mesh = clientsFor(t, {
    user: user.server.address,
    product: `127.0.0.1:${port}`,
    order: order.server.address,
  });
  const shopper = await createUser(mesh.users);
  const mug = await createProduct(mesh.products, { stock: 100 });

  // A steady stream of orders; the product process dies with SIGKILL in the middle of it.
  const outcomes: Promise<unknown>[] = [];
  for (let i = 0; i < 40; i++) {
    outcomes.push(
      mesh.orders.createOrder(
        { userId: shopper.userId, lines: [orderLine(mug.productId, 1)], requestId: `kill-${i}` },
        { timeoutMs: 3_000 },
      ),
    );
    if (i === 20) product.child.kill("SIGKILL");
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const settled = await Promise.allSettled(outcomes);
  const failures = settled.flatMap((outcome) =>
    outcome.status === "rejected" ? [outcome.reason] : [],
  );
  t.true(failures.length > 0, "the kill should have failed some orders");
  for (const error of failures) {
    t.true(
      [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED].includes(error.code),
      `got ${Code[error.code]}`,
    );
  }

  product = spawnService(productSpec, dir);
  await waitServing(product);
  // After the TTL and a reconcile pass, stock and confirmed orders agree exactly.
  const settle = async () => {
    const { orders } = await mesh.orders.listOrders({
      userId: shopper.userId,
      pageSize: 100,
      pageToken: "",
    });
    const confirmed = orders.filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED).length;
    const pending = orders.filter((o) => o.state === OrderState.ORDER_STATE_PENDING).length;
    return { confirmed, pending, stock: await stockOf(mesh, mug.productId) };
  };
  let state = await settle();
  for (
    let i = 0;
    i < 60 && (state.pending > 0 || (state.stock ?? 0) + state.confirmed !== 100);
    i++
  ) {
    await new Promise((resolve) => setTimeout(resolve, 200));
    state = await settle();
  }
  t.is(state.pending, 0);
  t.is((state.stock ?? 0) + state.confirmed, 100);
  t.is(state.confirmed, settled.filter((outcome) => outcome.status === "fulfilled").length);
});

test("a graceful shutdown finishes in-flight calls and reports NOT_SERVING", async (t) => {
  const mesh = await startMesh(t);
  const mug = await createProduct(mesh.products);
  const health = createClient(HealthService, mesh.product.server.address, {
    serviceName: "grpc.health.v1.Health",
  });
  t.teardown(() => health.close());
  const statuses: HealthCheckResponse_ServingStatus[] = [];
  const watch = (async () => {
    for await (const update of health.watch(
      { service: "shop.product.v1.ProductService" },
      { timeoutMs: 5_000 },
    )) {
      statuses.push(update.status);
      if (update.status === HealthCheckResponse_ServingStatus.NOT_SERVING) return;
    }
  })();

  mesh.product.server.faults.set("GetProduct", { delayMs: 800 });
  const inFlight = mesh.products.getProduct({ productId: mug.productId });
  await new Promise((resolve) => setTimeout(resolve, 200));
  const stopping = mesh.product.server.shutdown();

  const { product } = await inFlight;
  t.is(product?.productId, mug.productId);
  await watch;
  t.deepEqual(statuses, [
    HealthCheckResponse_ServingStatus.SERVING,
    HealthCheckResponse_ServingStatus.NOT_SERVING,
  ]);
  await stopping;
  const refused = await t.throwsAsync(mesh.products.getProduct({ productId: mug.productId }), {
    instanceOf: ServiceError,
  });
  t.is(refused?.code, Code.UNAVAILABLE);
});
