// Money stays exact: a total outside Money's range is refused before any stock is held, totals up
// to the maximum come back digit for digit, a response that cannot be encoded is logged as the
// status the client really got, and one unreadable row never breaks reads of the others.
import test from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { type Product, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { createClient } from "../../kit/client/index.js";
import { engineOf } from "../../kit/db/index.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { serve } from "../../kit/server.js";
import type { ServiceImplementation } from "../../kit/service.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { captureLogger, orderLine, startFleet } from "../helpers/fleet.js";

const MAX = "9007199254740991";

test("a total beyond Money's maximum is FAILED_PRECONDITION before anything is reserved", async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const dear = await addProduct(fleet.products, { stock: 20_000, amountMinor: MAX });
  const list = () => fleet.orders.listOrders({ userId: "", pageSize: 100, pageToken: "" });

  for (const quantity of [10_000, 3, 2]) {
    const error = await t.throwsAsync(
      fleet.orders.createOrder({
        userId: shopper.userId,
        lines: [orderLine(dear.productId, quantity)],
        requestId: `too-dear-${quantity}`,
      }),
      { instanceOf: ServiceError },
    );
    t.is(Code[error?.code ?? -1], "FAILED_PRECONDITION", error?.message);
    t.is(error?.details.reason, "TOTAL_TOO_LARGE");
    t.is(error?.details.metadata?.max_amount_minor, MAX);
  }
  // The reservation itself refuses, so a direct caller holds nothing either.
  const reserved = await t.throwsAsync(
    fleet.inventory.reserveStock({
      reservationId: "too-dear",
      lines: [orderLine(dear.productId, 2)],
      ttl: undefined,
    }),
    { instanceOf: ServiceError },
  );
  t.is(reserved?.details.reason, "TOTAL_TOO_LARGE");
  t.is(
    (await fleet.products.getProduct({ productId: dear.productId })).product?.stockQuantity,
    20_000,
  );
  t.deepEqual((await list()).orders, []);

  // One unit is within range and is an ordinary order; the refused ids are free.
  const { order } = await fleet.orders.createOrder({
    userId: shopper.userId,
    lines: [orderLine(dear.productId, 1)],
    requestId: "too-dear-2",
  });
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.deepEqual(order?.total, { currencyCode: "EUR", amountMinor: MAX });
  t.is((await list()).orders.length, 1);
});

test("totals up to Money's maximum are exact in the reply, in GetOrder and in ListOrders", async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const a = await addProduct(fleet.products, { stock: 5, amountMinor: "3002399751580330" });
  const b = await addProduct(fleet.products, { stock: 5, amountMinor: "4503599627370495" });
  const c = await addProduct(fleet.products, { stock: 5, amountMinor: "4503599627370496" });

  const cases: [Product, number, Product | undefined, string][] = [
    [a, 3, undefined, "9007199254740990"],
    [b, 1, c, MAX],
  ];
  for (const [first, quantity, second, total] of cases) {
    const lines = [orderLine(first.productId, quantity)];
    if (second) lines.push(orderLine(second.productId, 1));
    const { order } = await fleet.orders.createOrder({
      userId: shopper.userId,
      lines,
      requestId: `exact-${total}`,
    });
    t.deepEqual(order?.total, { currencyCode: "EUR", amountMinor: total });
    const read = await fleet.orders.getOrder({ orderId: order?.orderId ?? "" });
    t.deepEqual(read.order?.total, { currencyCode: "EUR", amountMinor: total });
  }
  const { orders } = await fleet.orders.listOrders({
    userId: shopper.userId,
    pageSize: 10,
    pageToken: "",
  });
  t.deepEqual(
    orders.map((order) => order.total?.amountMinor),
    [MAX, "9007199254740990"],
  );
});

test("one unreadable stored total does not break GetOrder or ListOrders of the others", async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 10, amountMinor: "250" });
  const place = async (requestId: string) =>
    (
      await fleet.orders.createOrder({
        userId: shopper.userId,
        lines: [orderLine(mug.productId, 1)],
        requestId,
      })
    ).order;
  const good = await place("good-1");
  const bad = await place("bad-1");
  await place("good-2");
  // What an older version stored for a total past int64: a REAL in SQLite. A PostgreSQL bigint
  // holds only integers; past Money's largest amount, one is as unreadable.
  const unreadableTotal =
    engineOf(fleet.order.db) === "sqlite" ? "9.007199254740991e19" : "90071992547409910";
  await fleet.order.db.raw(
    `UPDATE orders SET total_minor = ${unreadableTotal} WHERE order_id = ?`,
    [bad?.orderId ?? ""],
  );

  const { order } = await fleet.orders.getOrder({ orderId: good?.orderId ?? "" });
  t.deepEqual(order?.total, { currencyCode: "EUR", amountMinor: "250" });
  for (const userId of [shopper.userId, ""]) {
    const { orders } = await fleet.orders.listOrders({ userId, pageSize: 10, pageToken: "" });
    t.is(orders.length, 3);
    t.deepEqual(
      orders.map((o) => o.total?.amountMinor),
      ["250", undefined, "250"],
    );
  }
  // The unreadable order itself still answers, without the total it cannot state exactly.
  const unreadable = await fleet.orders.getOrder({ orderId: bad?.orderId ?? "" });
  t.is(unreadable.order?.orderId, bad?.orderId);
  t.is(unreadable.order?.total, undefined);
});

test("a response that cannot be encoded is INTERNAL, and its log line says INTERNAL", async (t) => {
  const { logger, lines } = captureLogger("product");
  // A handler bug on purpose: an int64 that does not fit in 64 bits cannot be encoded.
  const broken = {
    definition: ProductServiceService,
    handlers: {
      getProduct: async () => ({
        product: {
          productId: "prd_x",
          name: "x",
          description: "",
          price: { currencyCode: "EUR", amountMinor: "90071992547409910000" },
          stockQuantity: 1,
          createTime: new Date(),
          updateTime: new Date(),
        },
      }),
    },
  } as unknown as ServiceImplementation;
  const server = await serve([broken], { host: "127.0.0.1", port: 0, logger });
  t.teardown(() => server.shutdown());
  const products = createClient(ProductServiceService, server.address);
  t.teardown(() => products.close());

  const error = await t.throwsAsync(products.getProduct({ productId: "prd_x" }), {
    instanceOf: ServiceError,
  });
  t.is(Code[error?.code ?? -1], "INTERNAL");
  // One line per call: "rpc", or "rpc failed" (at error level) for our own failures.
  const logged = lines.filter(
    (line) => String(line.msg).startsWith("rpc") && String(line.method).endsWith("/GetProduct"),
  );
  t.deepEqual(
    logged.map((line) => line.code),
    ["INTERNAL"],
  );
});
