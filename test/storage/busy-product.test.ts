// Reservations of one product at once (a sale) each wait for the product's row lock. At most two
// of them hold a pooled connection of the product process while they wait; the rest wait for a
// turn in the process (kit/db/row-turns.ts). Orders for other products go on meanwhile, where the
// waiting reservations used to take every write connection and keep theirs waiting too.
import test from "ava";
import knex from "knex";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { useStorage } from "../helpers/storage.js";

useStorage("postgres");
// Three connections for writes and one for reads (kit/db.ts readShareOf).
process.env.SHOP_DATABASE_POOL_MAX = "4";

const SALE = 6;

test("orders for other products go on while many reservations wait for one product's row", async (t) => {
  let arrived = 0;
  const counting: ServerMiddleware = {
    name: "count ReserveStock calls",
    wrap: (method, next) =>
      method.rpc === "ReserveStock"
        ? (request, ctx) => {
            arrived++;
            return next(request, ctx);
          }
        : next,
  };
  const fleet = await startFleet(t, { middleware: { product: [counting] } });
  const user = await addUser(fleet.users);
  const sale = await addProduct(fleet.products, { stock: 100 });
  const other = await addProduct(fleet.products, { stock: 100 });

  const admin = knex({
    client: "pg",
    connection: String(fleet.product.db.client.config.connection.connectionString),
    pool: { min: 0, max: 2 },
  });
  t.teardown(() => admin.destroy());
  const waitingOnLocks = async () => {
    const { rows } = await admin.raw(
      "select count(*)::int as n from pg_stat_activity where datname = current_database()" +
        " and application_name = 'shopmesh product' and wait_event_type = 'Lock'",
    );
    return rows[0].n as number;
  };

  const trx = await admin.transaction();
  // Before admin.destroy(), which waits for this connection, should the test end early.
  t.teardown(() => (trx.isCompleted() ? undefined : trx.rollback()));
  await trx("product.products").where({ product_id: sale.productId }).forUpdate().select();
  const reserving = Array.from({ length: SALE }, (_, i) =>
    fleet.inventory
      .reserveStock(
        {
          reservationId: `sale-${i}`,
          lines: [orderLine(sale.productId, 1)],
          ttl: { seconds: "60", nanos: 0 },
        },
        { timeoutMs: 20_000 },
      )
      .then(
        () => "OK",
        (error: Error) => error.message,
      ),
  );
  await until("every reservation to reach the product service", () => arrived === SALE);
  await until(
    "two reservations to wait for the row's lock",
    async () => (await waitingOnLocks()) >= 2,
  );

  const { order } = await fleet.orders.createOrder(
    { userId: user.userId, lines: [orderLine(other.productId, 1)], requestId: "" },
    { timeoutMs: 10_000 },
  );
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(
    await waitingOnLocks(),
    2,
    "the order answered while two of the sale's reservations, and no more, waited on the lock",
  );

  await trx.rollback();
  t.deepEqual(await Promise.all(reserving), Array(SALE).fill("OK"));
  const { product } = await fleet.products.getProduct({ productId: sale.productId });
  t.is(product?.stockQuantity, 100 - SALE);
});
