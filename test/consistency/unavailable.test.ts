// Envoy retries any rpc that answers UNAVAILABLE on another replica, CreateOrder included
// (deploy/envoy/routes.ts): that is safe only while a shopmesh service answers UNAVAILABLE when
// a repeat cannot place anything twice. Here the order's own database stays busy right after
// its stock was taken and committed, the moment an UNAVAILABLE would leave an order the
// reconciler later confirms; the client resends as Envoy would, and there must still be one order.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import knex from "knex";
import { retryOn } from "../../deploy/envoy/routes.js";
import { OrderServiceService, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { methodsOf } from "../../kit/contract.js";
import { Code, ServiceError } from "../../kit/errors.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { createOrderService } from "../../services/order/service.js";
import { createProductService } from "../../services/product/service.js";
import { userService } from "../../services/user/service.js";
import { until } from "../helpers/eventually.js";
import { clientsFor, orderLine, start } from "../helpers/fleet.js";

/** Sends `call` again while it answers UNAVAILABLE, as Envoy's retry policy does. */
async function asEnvoyRetries<T>(call: () => Promise<T>, retries = 2): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await call();
    } catch (error) {
      const unavailable = error instanceof ServiceError && error.code === Code.UNAVAILABLE;
      if (!unavailable || attempt === retries) throw error;
    }
  }
}

test("CreateOrder without request_id, its database busy once the stock is taken: a retry never makes a second order", async (t) => {
  const createOrder = methodsOf(OrderServiceService).createOrder;
  t.true(
    createOrder !== undefined && retryOn(createOrder).split(",").includes("unavailable"),
    "Envoy retries CreateOrder on UNAVAILABLE",
  );
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-unavailable-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const database = path.join(dir, "order.sqlite");

  // Another writer on the order's file (a second replica, say) takes the write lock just as the
  // product service takes the first order's stock, and keeps it until the answer is in.
  const locker = knex({
    client: "better-sqlite3",
    connection: { filename: database },
    useNullAsDefault: true,
  });
  t.teardown(() => locker.destroy());
  let armed = false;
  let locked = false;
  const lockAfterReserve: ServerMiddleware = {
    name: "lock-orders-after-reserve",
    wrap: (method, next) =>
      method.rpc !== "ReserveStock"
        ? next
        : async (request, ctx) => {
            const response = await next(request, ctx);
            if (armed) {
              armed = false;
              await locker.raw("BEGIN IMMEDIATE");
              locked = true;
            }
            return response;
          },
  };
  const user = await start(t, userService);
  const product = await start(t, createProductService({ sweepMs: 100 }), {
    middleware: [lockAfterReserve],
  });
  const order = await start(t, createOrderService({ reservationTtlMs: 1_000, reconcileMs: 200 }), {
    database,
    dependencies: { users: user.server.address, inventory: product.server.address },
  });
  const fleet = clientsFor(t, {
    user: user.server.address,
    product: product.server.address,
    order: order.server.address,
  });
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 10 });

  armed = true;
  const answer = await asEnvoyRetries(async () => {
    try {
      return await fleet.orders.createOrder(
        { userId: shopper.userId, lines: [orderLine(mug.productId, 2)] },
        { timeoutMs: 20_000 },
      );
    } finally {
      if (locked) await locker.raw("ROLLBACK");
      locked = false;
    }
  }).catch((error: unknown) => error);
  t.log(answer instanceof ServiceError ? `${Code[answer.code]}: ${answer.message}` : "OK");

  // Once the reconciler has settled what the busy database interrupted: one order, whatever
  // the first answer was.
  const listed = () =>
    fleet.orders.listOrders({ userId: shopper.userId, pageSize: 10, pageToken: "" });
  const settled = await until("no order left PENDING", async () =>
    (await listed()).orders.every((o) => o.state !== OrderState.ORDER_STATE_PENDING),
  ).then(listed);
  const confirmed = settled.orders.filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED);
  t.is(confirmed.length, 1, settled.orders.map((o) => OrderState[o.state]).join(", "));
  t.deepEqual(confirmed[0]?.total, { currencyCode: "EUR", amountMinor: "2000" });
  t.is((await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity, 8);

  // The answer told the client which order it was, and how to resend without placing another.
  if (answer instanceof ServiceError) {
    t.is(Code[answer.code], "ABORTED");
    t.is(answer.details.reason, "ORDER_NOT_SETTLED");
    const { order_id: orderId, request_id: requestId } = answer.details.metadata ?? {};
    t.is(orderId, confirmed[0]?.orderId);
    const resent = await fleet.orders.createOrder({
      userId: shopper.userId,
      lines: [orderLine(mug.productId, 2)],
      requestId: requestId ?? "",
    });
    t.is(resent.order?.orderId, orderId);
  }
});
