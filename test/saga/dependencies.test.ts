// The user and product services unreachable, slow, lost mid-reply, not serving an rpc, down or
// killed: CreateOrder hedges a slow read, answers UNAVAILABLE otherwise, gives the stock back,
// and places the order once they answer.
import test from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { ReservationState } from "../../gen/ts/shop/product/v1/inventory.js";
import { Code, ServiceError } from "../../kit/errors.js";
import type { ServerMiddleware } from "../../kit/middleware/types.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { createOrderService } from "../../services/order/service.js";
import { userService } from "../../services/user/service.js";
import { eventually } from "../helpers/eventually.js";
import {
  captureLogger,
  clientsFor,
  orderLine,
  start,
  startFleet,
  startProcessFleet,
} from "../helpers/fleet.js";
import { refusedCreate, stockOf } from "./helpers.js";

test("an unreachable user service leaves no order, and the same request_id places it once the user answers", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 3 });
  const request = { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: "u-1" };
  const list = async () =>
    (await fleet.orders.listOrders({ userId: user.userId, pageSize: 10, pageToken: "" })).orders;

  fleet.user.faults.set("GetUser", { code: Code.UNAVAILABLE });
  const error = await t.throwsAsync(fleet.orders.createOrder(request), {
    instanceOf: ServiceError,
  });
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(error?.details.metadata?.dependency, "user");
  // The order was written while the user was checked; it is gone, and its key with it.
  t.deepEqual(await list(), []);
  t.is(await stockOf(fleet, mug.productId), 3);

  fleet.user.faults.clear();
  const { order } = await fleet.orders.createOrder(request);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.deepEqual(
    (await list()).map(({ orderId }) => orderId),
    [order?.orderId],
  );
  t.is(await stockOf(fleet, mug.productId), 2);
});

test("a dependency past the order service's own bound is logged at warn with its cause; a caller's own deadline at info", async (t) => {
  const logs = { order: captureLogger("order") };
  const fleet = await startFleet(t, {
    loggers: { order: logs.order.logger },
    dependencyTimeoutMs: 1_000,
  });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 4 });
  fleet.product.faults.set("ReserveStock", { delayMs: 3_000 });
  const lineOf = (requestId: string) =>
    eventually(`the CreateOrder line of ${requestId}`, () =>
      logs.order.lines.find(
        (line) =>
          line.method === "/shop.order.v1.OrderService/CreateOrder" &&
          line.idempotency_key === requestId,
      ),
    );

  const slow = { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: "slow" };
  const error = await t.throwsAsync(fleet.orders.createOrder(slow), { instanceOf: ServiceError });
  t.is(error?.code, Code.DEADLINE_EXCEEDED);
  t.is(error?.details.metadata?.dependency, "product");
  const logged = await lineOf("slow");
  t.like(logged, { code: "DEADLINE_EXCEEDED", level: 40, msg: "rpc failed" });
  t.truthy(logged.err);

  const hurried = { ...slow, requestId: "hurried" };
  await t.throwsAsync(fleet.orders.createOrder(hurried, { timeoutMs: 500 }), {
    instanceOf: ServiceError,
  });
  const own = await lineOf("hurried");
  t.like(own, { level: 30, msg: "rpc" });
  // The caller's reset may reach a busy service more than 20 ms before the deadline as the
  // service counts it (from the request's arrival): then the call was cancelled, as it saw it.
  t.true(["DEADLINE_EXCEEDED", "CANCELLED"].includes(String(own.code)), String(own.code));
  t.is(own.err, undefined);
});

test("a reservation whose reply is lost fails the order, gives the stock back, and a retry succeeds", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  // The product service takes and commits the stock, then the answer never arrives.
  fleet.product.faults.set("ReserveStock", { code: Code.UNAVAILABLE, afterHandler: true });

  const request = {
    userId: user.userId,
    lines: [orderLine(mug.productId, 2)],
    requestId: "flaky-1",
  };
  const error = await t.throwsAsync(fleet.orders.createOrder(request), {
    instanceOf: ServiceError,
  });
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(error?.details.reason, "DEPENDENCY_UNAVAILABLE");
  t.regex(error?.message ?? "", /product service is unavailable/);
  t.is(await stockOf(fleet, mug.productId), 5);
  const failed = await fleet.orders.listOrders({
    userId: user.userId,
    pageSize: 10,
    pageToken: "",
  });
  t.deepEqual(
    failed.orders.map((order) => order.state),
    [OrderState.ORDER_STATE_FAILED],
  );
  const { reservation } = await fleet.inventory.releaseReservation({
    reservationId: `order:${failed.orders[0]?.orderId}`,
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_RELEASED);

  fleet.product.faults.clear();
  const { order } = await fleet.orders.createOrder(request);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(fleet, mug.productId), 3);
});

test("a failed order's release that hangs does not hold CreateOrder's answer; it goes on, and the stock comes back", async (t) => {
  // Releases product has finished: they run inside the injected delay.
  let released = 0;
  const counting: ServerMiddleware = {
    name: "released",
    wrap: (method, next) =>
      method.rpc !== "ReleaseReservation"
        ? next
        : async (request, ctx) => {
            const response = await next(request, ctx);
            released++;
            return response;
          },
  };
  const fleet = await startFleet(t, { middleware: { product: [counting] } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  fleet.product.faults.set("ReserveStock", { code: Code.UNAVAILABLE, afterHandler: true });
  fleet.product.faults.set("ReleaseReservation", { delayMs: 3_000 });
  const request = { userId: user.userId, lines: [orderLine(mug.productId, 2)], requestId: "slow" };
  const error = await t.throwsAsync(fleet.orders.createOrder(request), {
    instanceOf: ServiceError,
  });
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(released, 0, "answered while the release waits at product");
  await eventually("the stock back", async () =>
    (await stockOf(fleet, mug.productId)) === 5 ? true : undefined,
  );
  const { orders } = await fleet.orders.listOrders({
    userId: user.userId,
    pageSize: 10,
    pageToken: "",
  });
  t.deepEqual(
    orders.map((order) => order.state),
    [OrderState.ORDER_STATE_FAILED],
  );
});

test("a GetUser unanswered after half a second is sent again beside it, and the order is placed once", async (t) => {
  const logs = { user: captureLogger("user") };
  const fleet = await startFleet(t, { loggers: { user: logs.user.logger } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 4 });
  // Every GetUser takes 0.8 s: the order service's client sends a second attempt at 0.5 s (to
  // the same server here, its only replica), and the first answer wins.
  fleet.user.faults.set("GetUser", { delayMs: 800 });
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "slow-user",
  });
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(fleet, mug.productId), 3);
  const attempts = await eventually("the GetUser attempts logged", () => {
    const lines = logs.user.lines.filter(
      (line) => line.method === "/shop.user.v1.UserService/GetUser",
    );
    return lines.length >= 2 ? lines : undefined;
  });
  // The first answers; the second, a hedge, is cancelled as the first's answer arrives. On a
  // busy machine the first may answer after 1 s, when a third is on its way: cancelled too.
  const [first, ...hedges] = [...attempts].sort(
    (a, b) => Number(a.attempt ?? 1) - Number(b.attempt ?? 1),
  );
  t.like(first, { code: "OK", attempt: undefined });
  t.true(hedges.length >= 1);
  for (const [i, hedge] of hedges.entries()) t.like(hedge, { code: "CANCELLED", attempt: i + 2 });
});

test("a dependency that does not serve the call makes CreateOrder UNAVAILABLE, not UNIMPLEMENTED", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 3 });
  // As an older product build, in a rolling upgrade, would answer an rpc it lacks.
  fleet.product.faults.set("ReserveStock", { code: Code.UNIMPLEMENTED });
  const error = await refusedCreate(
    t,
    fleet.orders,
    user.userId,
    mug.productId,
    1,
    "older-product",
  );
  t.is(error?.code, Code.UNAVAILABLE);
  t.like(error?.details, { reason: "DEPENDENCY_UNAVAILABLE", metadata: { dependency: "product" } });
  t.is(await stockOf(fleet, mug.productId), 3);
});

test("with the product service down, CreateOrder is UNAVAILABLE and places nothing", async (t) => {
  const logs = captureLogger("order");
  const user = await start(t, userService);
  const order = await start(t, createOrderService(), {
    dependencies: { users: user.server.address, inventory: "127.0.0.1:1" },
    logger: logs.logger,
  });
  const { users, orders } = clientsFor(t, {
    user: user.server.address,
    order: order.server.address,
  });
  const shopper = await addUser(users);
  const error = await refusedCreate(t, orders, shopper.userId, "prd_x", 1, "down");
  t.is(error?.code, Code.UNAVAILABLE);
  t.is(error?.details.reason, "DEPENDENCY_UNAVAILABLE");
  t.deepEqual(error?.details.metadata, { dependency: "product" });
  t.notRegex(
    JSON.stringify(error),
    /127\.0\.0\.1/,
    "no address inside the mesh reaches the caller",
  );
  // No order was written: a resend (Envoy retries UNAVAILABLE) would have left one FAILED order
  // per attempt.
  const listed = await orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
  t.deepEqual(listed.orders, []);

  // A caller whose deadline ends first, while the service still waits for product, ended the
  // call itself: that is what the service's log says, not that product is unavailable.
  await t.throwsAsync(
    orders.createOrder(
      { userId: shopper.userId, lines: [orderLine("prd_x", 1)], requestId: "short" },
      { timeoutMs: 300 },
    ),
  );
  const line = await eventually("the CreateOrder line of the short call", () =>
    logs.lines.find((logged) => logged.idempotency_key === "short"),
  );
  t.true(["DEADLINE_EXCEEDED", "CANCELLED"].includes(String(line.code)), String(line.code));
});

test("killing the product service mid-flight loses no stock once it is back", async (t) => {
  const fleet = await startProcessFleet(t, {
    env: {
      SHOP_RESERVATION_SWEEP_MS: "100",
      SHOP_RESERVATION_TTL_MS: "1500",
      SHOP_RECONCILE_MS: "200",
    },
  });
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 100 });

  // A steady stream of orders; the product process dies with SIGKILL in the middle of it.
  const outcomes: Promise<unknown>[] = [];
  let killed: Promise<void> | undefined;
  for (let i = 0; i < 40; i++) {
    outcomes.push(
      fleet.orders.createOrder(
        { userId: shopper.userId, lines: [orderLine(mug.productId, 1)], requestId: `kill-${i}` },
        { timeoutMs: 3_000 },
      ),
    );
    if (i === 20) killed = fleet.kill("product");
    // Pacing, not synchronization: one order every 5 ms.
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
  const settled = await Promise.allSettled(outcomes);
  await killed;
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

  await fleet.restart("product");
  // After the TTL and a reconcile pass, stock and confirmed orders agree exactly.
  const settle = async () => {
    const { orders } = await fleet.orders.listOrders({
      userId: shopper.userId,
      pageSize: 100,
      pageToken: "",
    });
    const confirmed = orders.filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED).length;
    const pending = orders.filter((o) => o.state === OrderState.ORDER_STATE_PENDING).length;
    return { confirmed, pending, stock: await stockOf(fleet, mug.productId) };
  };
  const state = await eventually(
    "no pending order, and stock plus confirmed orders back at 100",
    async () => {
      const now = await settle();
      return now.pending === 0 && (now.stock ?? 0) + now.confirmed === 100 ? now : undefined;
    },
    { timeoutMs: 15_000, intervalMs: 200 },
  );
  t.is(state.pending, 0);
  t.is((state.stock ?? 0) + state.confirmed, 100);
  t.is(state.confirmed, settled.filter((outcome) => outcome.status === "fulfilled").length);
});
