// A database reply lost on the way back: the server ran the statement (and, outside a
// transaction, committed it), then the connection was cut before the service heard so. Whether
// the write was kept is unknown to the service, so it answers UNAVAILABLE, which everything in
// the mesh retries, only where a repeat cannot do anything twice: reads, idempotent rpcs and
// calls with a request_id. A create, update or delete without one answers ABORTED
// (OUTCOME_UNKNOWN): read, then decide. Through Envoy, such a CreateProduct makes one product.
import test, { type ExecutionContext } from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { createClient } from "../../kit/client/index.js";
import { Code } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { createProductService } from "../../services/product/service.js";
import { testCallers } from "../helpers/credentials.js";
import { startEnvoy } from "../helpers/envoy.js";
import { eventually } from "../helpers/eventually.js";
import { clientsFor, orderLine, start, startFleet } from "../helpers/fleet.js";
import { pgProxy } from "../helpers/pg-proxy.js";
import { expectStatus } from "../helpers/status.js";
import { freshDatabase, useStorage } from "../helpers/storage.js";

useStorage("postgres");

const PRODUCT_INSERT = /insert into "products"/i;

/** A product service whose database connections pass through a proxy the test can cut. */
async function catalog(t: ExecutionContext) {
  const proxy = await pgProxy(t, await freshDatabase());
  const service = await start(t, createProductService(), { database: proxy.url });
  const { products } = clientsFor(t, { product: service.server.address });
  return { proxy, service, products };
}

async function named(products: ReturnType<typeof clientsFor>["products"], name: string) {
  const { products: page } = await products.listProducts({
    pageSize: 1000,
    pageToken: "",
    inStockOnly: false,
  });
  return page.filter((product) => product.name === name);
}

test("a CreateProduct whose reply the database lost answers ABORTED OUTCOME_UNKNOWN, and its product is kept", async (t) => {
  const { proxy, products } = await catalog(t);
  const cut = proxy.cutReplyTo(PRODUCT_INSERT);
  await expectStatus(t, addProduct(products, { name: "kept" }), Code.ABORTED, "OUTCOME_UNKNOWN");
  await cut;
  t.is((await named(products, "kept")).length, 1);
});

test("through Envoy, which retries UNAVAILABLE on every rpc, that CreateProduct still makes one product", async (t) => {
  const { proxy, service, products } = await catalog(t);
  const envoy = await startEnvoy({
    services: { product: [{ host: "127.0.0.1", port: service.server.port }] },
    waitHealthy: ["product"],
  });
  t.teardown(() => envoy.stop());
  const viaEnvoy = createClient(ProductServiceService, envoy.address, {
    middleware: testCallers(),
  });
  t.teardown(() => viaEnvoy.close());
  const cut = proxy.cutReplyTo(PRODUCT_INSERT);
  await expectStatus(t, addProduct(viaEnvoy, { name: "once" }), Code.ABORTED, "OUTCOME_UNKNOWN");
  await cut;
  t.is((await named(products, "once")).length, 1);
  t.is(await envoy.counter("cluster.product.upstream_rq_retry"), 0);
});

test("a GetProduct whose reply the database lost is UNAVAILABLE to the service's client, which repeats it", async (t) => {
  const { proxy, products } = await catalog(t);
  const mug = await addProduct(products, { name: "mug" });
  const cut = proxy.cutReplyTo(/select/i);
  const { product } = await products.getProduct({ productId: mug.productId });
  await cut;
  t.is(product?.name, "mug");
});

/** A fleet whose order service reaches its database through a proxy, with a shopper and stock. */
async function shop(t: ExecutionContext) {
  const proxy = await pgProxy(t, await freshDatabase());
  const fleet = await startFleet(t, {
    databases: { order: proxy.url },
    // The reconciler settles an order left PENDING this long after it was written.
    order: { reservationTtlMs: 1_000 },
  });
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 100 });
  const order = (requestId: string) => ({
    userId: shopper.userId,
    lines: [orderLine(mug.productId, 3)],
    requestId,
  });
  const settled = async () => {
    const { orders } = await fleet.orders.listOrders({
      userId: shopper.userId,
      pageSize: 100,
      pageToken: "",
    });
    return orders.every((o) => o.state !== OrderState.ORDER_STATE_PENDING) ? orders : undefined;
  };
  const stock = async () =>
    (await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity;
  return { proxy, fleet, order, settled, stock };
}

/** The order's write: its transaction commits, and that reply is lost. */
const ORDER_COMMIT = [/INSERT INTO orders/, /COMMIT/] as const;

test("a CreateOrder with a request_id whose write's commit reply was lost is UNAVAILABLE, and its resend places that one order", async (t) => {
  const { proxy, fleet, order, settled, stock } = await shop(t);
  const cut = proxy.cutReplyTo(...ORDER_COMMIT);
  await expectStatus(
    t,
    fleet.orders.createOrder(order("lost-commit")),
    Code.UNAVAILABLE,
    "DATABASE_UNAVAILABLE",
  );
  await cut;
  // The resend finds the order the lost commit kept, and confirms it or fails it and places
  // another: either way one order of the request is CONFIRMED, and its stock taken once.
  const { order: placed } = await fleet.orders.createOrder(order("lost-commit"));
  t.is(placed?.state, OrderState.ORDER_STATE_CONFIRMED);
  const orders = await eventually("no order PENDING", settled);
  const confirmed = orders.filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED);
  t.deepEqual(
    confirmed.map((o) => o.orderId),
    [placed?.orderId],
  );
  t.is(await stock(), 97);
});

test("a CreateOrder without one answers ABORTED OUTCOME_UNKNOWN, and the order it may have kept takes stock at most once", async (t) => {
  const { proxy, fleet, order, settled, stock } = await shop(t);
  const cut = proxy.cutReplyTo(...ORDER_COMMIT);
  await expectStatus(t, fleet.orders.createOrder(order("")), Code.ABORTED, "OUTCOME_UNKNOWN");
  await cut;
  const orders = await eventually("no order PENDING", settled);
  t.true(orders.length <= 1, `${orders.length} orders`);
  const confirmed = orders.filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stock(), 100 - 3 * confirmed.length);
  t.log(`the kept order ended ${orders.map((o) => OrderState[o.state]).join(", ") || "absent"}`);
});
