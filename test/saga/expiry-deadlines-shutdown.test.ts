// Time limits and shutdown: a held reservation's TTL gives the stock back (with a product
// service older than commit-on-reserve, a hold that expires first fails the order, which may be
// sent again), the caller's deadline reaches the dependencies, a CreateOrder that runs out of
// its own names none, and a graceful shutdown finishes the calls in flight.
import { connect } from "node:http2";
import { Metadata } from "@grpc/grpc-js";
import test from "ava";
import { HealthCheckResponse_ServingStatus, HealthService } from "../../gen/ts/health/v1/health.js";
import { CreateOrderRequest, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import {
  ReservationState,
  type ReserveStockRequest,
} from "../../gen/ts/shop/product/v1/inventory.js";
import { createClient } from "../../kit/client/index.js";
import { Code, decodeStatus, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { tokenFor } from "../helpers/credentials.js";
import { eventually, until } from "../helpers/eventually.js";
import { captureLogger, orderLine, startFleet } from "../helpers/fleet.js";
import { grpcFrame, rawGrpcCall } from "../helpers/grpc-frame.js";
import { stockOf } from "./helpers.js";

test("a held reservation expires after its TTL and gives its stock back", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const { reservation } = await fleet.inventory.reserveStock({
    reservationId: "expiring-1",
    lines: [orderLine(mug.productId, 4)],
    ttl: { seconds: "1", nanos: 0 },
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_HELD);
  t.is(await stockOf(fleet, mug.productId), 1);

  await until("the expired reservation to give its stock back", async () => {
    return (await stockOf(fleet, mug.productId)) === 5;
  });
  const error = await t.throwsAsync(
    fleet.inventory.commitReservation({ reservationId: "expiring-1" }),
    {
      instanceOf: ServiceError,
    },
  );
  t.is(error?.code, Code.FAILED_PRECONDITION);
  t.is(error?.details.reason, "RESERVATION_NOT_HELD");
});

test("against a product service older than commit-on-reserve, orders are committed as before", async (t) => {
  // The TTL leaves a loaded machine time to place the first order on PostgreSQL; at 1 s, one
  // CI run's took longer.
  const fleet = await startFleet(t, { order: { reservationTtlMs: 3_000 } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 3 });
  // An older product service does not know ReserveStockRequest.commit: it only holds the stock.
  const older = (request: ReserveStockRequest) => ({ ...request, commit: false });
  fleet.product.faults.set("ReserveStock", { rewrite: older });
  const placed = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "upgrade-1",
  });
  t.is(placed.order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(placed.order?.total?.amountMinor, "1000");
  const { reservation } = await fleet.inventory.commitReservation({
    reservationId: `order:${placed.order?.orderId}`,
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_COMMITTED);

  // The hold outlives its TTL before the commit: the order fails, keeps no stock, may be resent.
  fleet.product.faults.set("CommitReservation", { delayMs: 3_500 });
  const request = {
    userId: user.userId,
    lines: [orderLine(mug.productId, 2)],
    requestId: "slow",
  };
  const error = await t.throwsAsync(fleet.orders.createOrder(request), {
    instanceOf: ServiceError,
  });
  // The service's slowness, not the caller's mistake: a retryable status that says so.
  t.is(error?.code, Code.ABORTED);
  t.is(error?.details.reason, "RESERVATION_EXPIRED");
  t.is(error?.details.metadata?.request_id, "slow");
  t.is(await stockOf(fleet, mug.productId), 2);

  fleet.product.faults.clear();
  const { order } = await fleet.orders.createOrder(request);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(fleet, mug.productId), 0);
});

test("the caller's deadline reaches the user and product services", async (t) => {
  const logs = { user: captureLogger("user"), product: captureLogger("product") };
  const fleet = await startFleet(t, {
    loggers: { user: logs.user.logger, product: logs.product.logger },
  });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 4 });
  // One order first, so that what a first call does once (importing the token keys, verifying
  // the caller's token, which is then remembered) is not counted as deadline drift below.
  await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "warm-up",
  });
  logs.user.lines.length = 0;
  logs.product.lines.length = 0;
  fleet.product.faults.set("ReserveStock", { delayMs: 8_000 });

  // The client fixes its deadline when the call starts: somewhere in [earliest, latest].
  const earliest = Date.now() + 2_000;
  const call = fleet.orders.createOrder(
    { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: "hurry" },
    { timeoutMs: 2_000 },
  );
  const latest = Date.now() + 2_000;
  const error = await t.throwsAsync(call, { instanceOf: ServiceError });
  t.is(error?.code, Code.DEADLINE_EXCEEDED);

  // The per-call log line is written when the downstream call ends, just after ours.
  const deadlineOf = (lines: Record<string, unknown>[], method: string) =>
    eventually(`the log line of ${method}`, () => {
      const line = lines.find((entry) => entry.method === method);
      return line && Date.parse(String(line.deadline));
    });
  // The downstream calls carried the caller's deadline, not the order service's 5 s default.
  // Each hop re-anchors the remaining time on arrival, so allow it to land later: up to a second
  // and a half on a loaded machine, where these three services and the client share one event
  // loop. The 5 s default would land 3 s late.
  for (const [lines, method] of [
    [logs.user.lines, "/shop.user.v1.UserService/GetUser"],
    [logs.product.lines, "/shop.product.v1.InventoryService/ReserveStock"],
  ] as const) {
    const deadline = await deadlineOf(lines, method);
    t.true(deadline >= earliest - 50, `${method} deadline ${deadline - earliest} ms early`);
    t.true(deadline <= latest + 1_500, `${method} deadline ${deadline - latest} ms late`);
  }
  // The abandoned reservation is compensated: nothing stays held.
  await until("the abandoned reservation to be released", async () => {
    return (await stockOf(fleet, mug.productId)) === 3;
  });
});

test("a CreateOrder whose own deadline runs out names no dependency", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 100 });
  fleet.product.faults.set("ReserveStock", { delayMs: 5_000 });
  const token = await tokenFor(user.userId);
  // By hand, so that the answer read is the service's: a client library ends the call itself at
  // its deadline.
  const session = connect(`http://${fleet.order.server.address}`);
  t.teardown(() => session.destroy());
  /** The ErrorInfo the service ends a CreateOrder with, given `timeout` as its grpc-timeout. */
  const answer = async (timeout: string, requestId: string) => {
    const { stream } = rawGrpcCall(session, "/shop.order.v1.OrderService/CreateOrder", {
      authorization: `Bearer ${token}`,
      "grpc-timeout": timeout,
    });
    // The status comes in the trailers, or in the headers when nothing was sent before it.
    const ended = new Promise<Record<string, unknown>>((resolve) => {
      stream.on("response", (headers) => headers["grpc-status"] !== undefined && resolve(headers));
      stream.on("trailers", resolve);
    });
    stream.resume();
    const request = { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId };
    stream.end(
      grpcFrame(CreateOrderRequest.encode(CreateOrderRequest.fromPartial(request)).finish()),
    );
    const status = await ended;
    const metadata = new Metadata();
    const details = String(status["grpc-status-details-bin"] ?? "");
    metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
    return { code: Number(status["grpc-status"]), ...decodeStatus(metadata) };
  };
  // The service's own timers and the caller's deadline race: some answers come from the saga.
  for (let i = 0; i < 40; i++) {
    const { code, reason, metadata } = await answer(`${5 + (i % 10) * 10}m`, `own-deadline-${i}`);
    t.is(code, Code.DEADLINE_EXCEEDED, reason);
    // A longer deadline would have let it finish: no wait of the service's own ran out.
    t.is(metadata?.dependency, undefined, `call ${i}: ${reason}`);
  }
});

test("a graceful shutdown finishes in-flight calls and reports NOT_SERVING", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products);
  const health = createClient(HealthService, fleet.product.server.address);
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

  await until("the health watch to report SERVING", () => statuses.length > 0);
  fleet.product.faults.set("GetProduct", { delayMs: 800 });
  const inFlight = fleet.products.getProduct({ productId: mug.productId });
  await until("GetProduct to be in flight", () => fleet.product.faults.inFault("GetProduct") > 0);
  const stopping = fleet.product.server.shutdown();

  const { product } = await inFlight;
  t.is(product?.productId, mug.productId);
  await watch;
  t.deepEqual(statuses, [
    HealthCheckResponse_ServingStatus.SERVING,
    HealthCheckResponse_ServingStatus.NOT_SERVING,
  ]);
  await stopping;
  const refused = await t.throwsAsync(fleet.products.getProduct({ productId: mug.productId }), {
    instanceOf: ServiceError,
  });
  t.is(refused?.code, Code.UNAVAILABLE);
});
