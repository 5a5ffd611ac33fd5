// A cancel is never half done: whatever deadline the caller gives, once the order service has
// started a cancel it finishes it, and order state and stock agree; a retried cancel gives the
// units back once.
import test from "ava";
import { type Order, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startFleet, startProcessFleet } from "../helpers/fleet.js";

test("cancels cut short by 1-5 ms deadlines leave state and stock in agreement", async (t) => {
  const fleet = await startFleet(t, { order: { reconcileMs: 100 } });
  const shopper = await addUser(fleet.users);
  const initial = 1_000;
  const mug = await addProduct(fleet.products, { stock: initial });
  const orders: Order[] = [];
  for (let i = 0; i < 40; i++) {
    const { order } = await fleet.orders.createOrder({
      userId: shopper.userId,
      lines: [orderLine(mug.productId, 1 + (i % 3))],
      requestId: `short-cancel-${i}`,
    });
    orders.push(order as Order);
  }

  const codes = new Map<string, number>();
  await Promise.all(
    orders.map(async (order, i) => {
      const outcome = await fleet.orders
        .cancelOrder({ orderId: order.orderId }, { timeoutMs: 1 + (i % 5) })
        .then(
          () => "OK",
          (error: ServiceError) => Code[error.code],
        );
      codes.set(outcome, (codes.get(outcome) ?? 0) + 1);
      if (outcome !== "OK") {
        t.true(["DEADLINE_EXCEEDED", "CANCELLED", "UNAVAILABLE"].includes(outcome), outcome);
      }
    }),
  );
  t.log("CancelOrder outcomes:", Object.fromEntries(codes));

  // Every interrupted cancel either never started (CONFIRMED, stock held) or finishes by itself
  // (CANCELLED, stock back). Nothing stays in between once the reconciler has run.
  const states = async () =>
    Promise.all(
      orders.map(async (o) => (await fleet.orders.getOrder({ orderId: o.orderId })).order as Order),
    );
  let now = await states();
  await until("no order CANCELLING", async () => {
    now = await states();
    return !now.some((o) => o.state === OrderState.ORDER_STATE_CANCELLING);
  });
  const held = now
    .filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED)
    .reduce((sum, o) => sum + (o.lines[0]?.quantity ?? 0), 0);
  t.deepEqual(
    now.filter(
      (o) =>
        o.state !== OrderState.ORDER_STATE_CONFIRMED &&
        o.state !== OrderState.ORDER_STATE_CANCELLED,
    ),
    [],
  );
  const stock = async () =>
    (await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity;
  t.is(await stock(), initial - held, "stock = initial - units of confirmed orders");

  // Retrying every cancel finishes the rest and gives each order's units back exactly once.
  for (const order of orders) {
    const { order: cancelled } = await fleet.orders.cancelOrder({ orderId: order.orderId });
    t.is(cancelled?.state, OrderState.ORDER_STATE_CANCELLED);
  }
  await Promise.all(orders.map((order) => fleet.orders.cancelOrder({ orderId: order.orderId })));
  t.is(await stock(), initial);
});

test("a cancel whose release cannot get through is recorded, then completed by the reconciler", async (t) => {
  const fleet = await startProcessFleet(t, { env: { SHOP_RECONCILE_MS: "200" } });
  const { users, products, orders } = fleet;
  const shopper = await addUser(users);
  const mug = await addProduct(products, { stock: 10 });
  const request = {
    userId: shopper.userId,
    lines: [orderLine(mug.productId, 4)],
    requestId: "cancel-while-down",
  };
  const { order } = await orders.createOrder(request);
  const orderId = order?.orderId ?? "";

  // The product process dies: the cancel is refused as retryable, but it is recorded.
  await fleet.kill("product");
  const error = await t.throwsAsync(orders.cancelOrder({ orderId }, { timeoutMs: 1_500 }), {
    instanceOf: ServiceError,
  });
  t.true(["UNAVAILABLE", "DEADLINE_EXCEEDED"].includes(Code[error?.code ?? -1]), error?.message);
  const { order: recorded } = await orders.getOrder({ orderId });
  t.is(recorded?.state, OrderState.ORDER_STATE_CANCELLING);
  // A cancelled order is not an answer CreateOrder may give with OK.
  const replay = await t.throwsAsync(orders.createOrder(request), { instanceOf: ServiceError });
  t.is(Code[replay?.code ?? -1], "FAILED_PRECONDITION");
  t.is(replay?.details.reason, "ORDER_CANCELLED");

  // Nobody retries: the reconciler finishes the cancel once the product service is back.
  await fleet.restart("product");
  await until(
    "the reconciler to finish the cancel",
    async () =>
      (await orders.getOrder({ orderId })).order?.state === OrderState.ORDER_STATE_CANCELLED,
  );
  t.is((await products.getProduct({ productId: mug.productId })).product?.stockQuantity, 10);
  // A late retry changes nothing.
  t.is((await orders.cancelOrder({ orderId })).order?.state, OrderState.ORDER_STATE_CANCELLED);
  t.is((await products.getProduct({ productId: mug.productId })).product?.stockQuantity, 10);
});
