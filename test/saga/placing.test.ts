// An order placed end to end on a fleet of its own: confirmed at the reserved price, through
// the generated grpc-js client too, never overselling, and cancelled with its stock given back.
import { credentials, Metadata } from "@grpc/grpc-js";
import test from "ava";
import {
  type CreateOrderResponse,
  OrderServiceClient,
  OrderState,
} from "../../gen/ts/shop/order/v1/order.js";
import { Code } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { tokenFor } from "../helpers/credentials.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { stockOf } from "./helpers.js";

test("an order is confirmed at the reserved price and takes the stock", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5, amountMinor: "1250" });
  const kettle = await addProduct(fleet.products, { stock: 2, amountMinor: "4900" });

  const { order } = await fleet.orders.createOrder({
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
  t.is(await stockOf(fleet, mug.productId), 3);
  t.is(await stockOf(fleet, kettle.productId), 1);

  // A later price change does not touch the order's snapshot.
  await fleet.products.updateProduct({
    product: { ...mug, price: { currencyCode: "EUR", amountMinor: "9999" } },
    updateMask: ["price"],
  });
  const again = await fleet.orders.getOrder({ orderId: order?.orderId ?? "" });
  t.is(again.order?.lines[0]?.unitPrice?.amountMinor, "1250");
});

test("the generated grpc-js client class talks to the order service as is", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products);
  const client = new OrderServiceClient(fleet.order.server.address, credentials.createInsecure());
  t.teardown(() => client.close());
  const metadata = new Metadata();
  metadata.set("authorization", `Bearer ${await tokenFor(user.userId)}`);
  const response = await new Promise<CreateOrderResponse>((resolve, reject) =>
    client.createOrder(
      {
        userId: user.userId,
        lines: [{ productId: mug.productId, quantity: 1, unitPrice: undefined }],
        requestId: "generated-1",
      },
      metadata,
      (error, reply) => (error ? reject(error) : resolve(reply)),
    ),
  );
  t.is(response.order?.state, OrderState.ORDER_STATE_CONFIRMED);
});

test("50 parallel orders for 10 units: exactly 10 succeed and stock never goes below 0", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 10 });

  let lowest = 10;
  let polling = true;
  const poller = (async () => {
    while (polling) {
      lowest = Math.min(lowest, (await stockOf(fleet, mug.productId)) ?? -1);
    }
  })();
  const outcomes = await Promise.allSettled(
    Array.from({ length: 50 }, (_, i) =>
      fleet.orders.createOrder({
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
  t.is(await stockOf(fleet, mug.productId), 0);
  t.true(lowest >= 0);
});

test("cancelling returns the stock, and WatchOrder streams the change then ends", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 4 });
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 3)],
    requestId: "cancel-me",
  });
  const orderId = order?.orderId ?? "";
  const seen: OrderState[] = [];
  const watching = (async () => {
    for await (const update of fleet.orders.watchOrder({ orderId })) {
      seen.push(update.order?.state ?? OrderState.ORDER_STATE_UNSPECIFIED);
      if (seen.length === 1) await fleet.orders.cancelOrder({ orderId });
    }
  })();
  await watching;
  // CANCELLING too, whether or not a read of the order fell between the two steps of the cancel.
  t.deepEqual(seen, [
    OrderState.ORDER_STATE_CONFIRMED,
    OrderState.ORDER_STATE_CANCELLING,
    OrderState.ORDER_STATE_CANCELLED,
  ]);
  t.is(await stockOf(fleet, mug.productId), 4);

  const again = await fleet.orders.cancelOrder({ orderId });
  t.is(again.order?.state, OrderState.ORDER_STATE_CANCELLED);
  t.is(await stockOf(fleet, mug.productId), 4);
});
