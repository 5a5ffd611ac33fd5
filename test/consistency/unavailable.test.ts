// Envoy retries any rpc that answers UNAVAILABLE on another replica, CreateOrder included
// (deploy/envoy/routes.ts): that is safe only while a shopmesh service answers UNAVAILABLE when
// a repeat cannot place anything twice. Here the order's own database stays busy right after
// its stock was taken and committed, the moment an UNAVAILABLE would leave an order the
// reconciler later confirms; the client resends as Envoy would, and there must still be one order.
// With the caller's request_id the answer names that order too, rather than "the database is busy".
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
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

/**
 * A fleet whose order database another writer (a second replica, say) locks just as the product
 * service takes an order's stock, once `lockNext()` is called, until `unlock()`.
 */
async function busyOnceStockIsTaken(t: ExecutionContext) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-unavailable-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const database = path.join(dir, "order.sqlite");
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
  const place = (requestId = "") =>
    fleet.orders.createOrder(
      { userId: shopper.userId, lines: [orderLine(mug.productId, 2)], requestId },
      { timeoutMs: 20_000 },
    );
  // Once the reconciler has settled what the busy database interrupted: the orders, none PENDING.
  const settled = async () => {
    const listed = () =>
      fleet.orders.listOrders({ userId: shopper.userId, pageSize: 10, pageToken: "" });
    await until("no order left PENDING", async () =>
      (await listed()).orders.every((o) => o.state !== OrderState.ORDER_STATE_PENDING),
    );
    return (await listed()).orders;
  };
  const stock = async () =>
    (await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity;
  return {
    place,
    settled,
    stock,
    lockNext: () => {
      armed = true;
    },
    unlock: async () => {
      if (locked) await locker.raw("ROLLBACK");
      locked = false;
    },
  };
}

test("CreateOrder without request_id, its database busy once the stock is taken: a retry never makes a second order", async (t) => {
  const createOrder = methodsOf(OrderServiceService).createOrder;
  t.true(
    createOrder !== undefined && retryOn(createOrder).split(",").includes("unavailable"),
    "Envoy retries CreateOrder on UNAVAILABLE",
  );
  const { place, settled, stock, lockNext, unlock } = await busyOnceStockIsTaken(t);

  lockNext();
  const answer = await asEnvoyRetries(() => place().finally(unlock)).catch(
    (error: unknown) => error,
  );
  t.log(answer instanceof ServiceError ? `${Code[answer.code]}: ${answer.message}` : "OK");

  // One order, whatever the first answer was.
  const orders = await settled();
  const confirmed = orders.filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED);
  t.is(confirmed.length, 1, orders.map((o) => OrderState[o.state]).join(", "));
  t.deepEqual(confirmed[0]?.total, { currencyCode: "EUR", amountMinor: "2000" });
  t.is(await stock(), 8);

  // The answer told the client which order it was, and how to resend without placing another.
  if (answer instanceof ServiceError) {
    t.is(Code[answer.code], "ABORTED");
    t.is(answer.details.reason, "ORDER_NOT_SETTLED");
    const { order_id: orderId, request_id: requestId } = answer.details.metadata ?? {};
    t.is(orderId, confirmed[0]?.orderId);
    const resent = await place(requestId ?? "");
    t.is(resent.order?.orderId, orderId);
  } else {
    t.is((answer as { order?: { orderId: string } }).order?.orderId, confirmed[0]?.orderId);
  }
});

test("CreateOrder with request_id, its database busy once the stock is taken, answers ORDER_NOT_SETTLED, not busy", async (t) => {
  const { place, settled, stock, lockNext, unlock } = await busyOnceStockIsTaken(t);

  // No resend: "the database is busy" would read as "nothing kept", yet the reconciler confirms
  // the order, its stock taken.
  lockNext();
  const answer = await place("req-busy")
    .finally(unlock)
    .catch((error: unknown) => error);
  if (!(answer instanceof ServiceError)) return t.fail("answered OK while the database was locked");
  t.is(Code[answer.code], "ABORTED", answer.message);
  t.is(answer.details.reason, "ORDER_NOT_SETTLED");
  t.is(answer.details.metadata?.request_id, "req-busy");

  const orders = await settled();
  t.deepEqual(
    orders.map((o) => [o.orderId, OrderState[o.state]]),
    [[answer.details.metadata?.order_id, "ORDER_STATE_CONFIRMED"]],
  );
  t.is(await stock(), 8);
});
