// Refused orders: an unknown user or too little stock leaves no order and holds no stock (an
// unanswered reservation leaves it FAILED), a late ReserveStock takes none, and a watch of a
// refused order ends FAILED, not NOT_FOUND.
import test from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import {
  ReservationState,
  type ReserveStockRequest,
} from "../../gen/ts/shop/product/v1/inventory.js";
import { Code, type ServiceError } from "../../kit/errors.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { eventually } from "../helpers/eventually.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { refusedCreate, stockOf } from "./helpers.js";

test("an unknown user fails the order before any stock is held", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 4 });
  const error = await refusedCreate(t, fleet.orders, "usr_nobody", mug.productId, 1, "");
  t.is(error?.code, Code.NOT_FOUND);
  t.is(error?.details.reason, "USER_NOT_FOUND");
  t.is(await stockOf(fleet, mug.productId), 4);
  const listed = await fleet.orders.listOrders({ userId: "", pageSize: 10, pageToken: "" });
  t.is(listed.orders.length, 0);
});

test("a refused reservation leaves no order behind; an unanswered one leaves it FAILED", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const list = async () =>
    (await fleet.orders.listOrders({ userId: user.userId, pageSize: 10, pageToken: "" })).orders;

  const short = await refusedCreate(t, fleet.orders, user.userId, mug.productId, 6, "too-many");
  t.is(short?.details.reason, "INSUFFICIENT_STOCK");
  t.deepEqual(await list(), []);

  fleet.product.faults.set("ReserveStock", { code: Code.UNAVAILABLE });
  const error = await refusedCreate(t, fleet.orders, user.userId, mug.productId, 1, "r");
  t.is(error?.code, Code.UNAVAILABLE);
  t.deepEqual(
    (await list()).map((order) => order.state),
    [OrderState.ORDER_STATE_FAILED],
  );
  t.is(await stockOf(fleet, mug.productId), 5);
});

test("a ReserveStock that reaches product after its order was refused takes no stock", async (t) => {
  // A first attempt the client resent (its connection dropped, its replica paused) may still
  // run after the resend was refused and the order deleted; this replays it then.
  const sent: ReserveStockRequest[] = [];
  const recording: ServerMiddleware = {
    name: "record ReserveStock",
    wrap: (method, next) =>
      method.rpc === "ReserveStock"
        ? (request, ctx) => {
            sent.push(request as ReserveStockRequest);
            return next(request, ctx);
          }
        : next,
  };
  const fleet = await startFleet(t, { middleware: { product: [recording] } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const short = await refusedCreate(t, fleet.orders, user.userId, mug.productId, 6, "too-many");
  t.is(short?.details.reason, "INSUFFICIENT_STOCK");
  const [late] = sent;
  if (!late) return t.fail("the order service sent no ReserveStock");

  await fleet.products.updateProduct({
    product: { productId: mug.productId, stockQuantity: 10 },
    updateMask: ["stock_quantity"],
  });
  const { reservation } = await fleet.inventory.reserveStock(late);
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_RELEASED);
  t.is(await stockOf(fleet, mug.productId), 10);
  const { orders } = await fleet.orders.listOrders({ userId: user.userId, pageSize: 10 });
  t.deepEqual(orders, []);
});

test("a watch of an order that CreateOrder then refuses ends with FAILED, not NOT_FOUND", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  // Each refusal comes a second in, while the order is PENDING for anyone to see and watch: the
  // product's (the order fails, then is deleted) and an unknown user's (deleted at once, which a
  // watch learns only by polling).
  const refusals = [
    { userId: user.userId, rpc: "ReserveStock", code: Code.FAILED_PRECONDITION },
    { userId: "usr_nobody", rpc: "GetUser", code: Code.NOT_FOUND },
  ] as const;
  for (const { userId, rpc, code } of refusals) {
    const faults = rpc === "GetUser" ? fleet.user.faults : fleet.product.faults;
    faults.set(rpc, { delayMs: 1_000, ...(rpc === "ReserveStock" && { code }) });
    const placing = t.throwsAsync(
      fleet.orders.createOrder({
        userId,
        lines: [orderLine(mug.productId, 1)],
        requestId: `refused-while-watched-${rpc}`,
      }),
    );
    const pending = await eventually("the PENDING order", async () => {
      const { orders } = await fleet.orders.listOrders({ userId: "", pageSize: 10 });
      return orders[0];
    });
    const states: OrderState[] = [];
    for await (const { order } of fleet.orders.watchOrder({ orderId: pending.orderId })) {
      if (order) states.push(order.state);
    }
    t.deepEqual(states, [OrderState.ORDER_STATE_PENDING, OrderState.ORDER_STATE_FAILED], rpc);
    t.is(((await placing) as ServiceError | undefined)?.code, code, rpc);
    const { orders } = await fleet.orders.listOrders({ userId: "", pageSize: 10 });
    t.deepEqual(orders, [], `${rpc}: no order was placed`);
    faults.clear();
  }
});
