// Reservations, or releases, of one product at once (a sale, or its orders given back) each wait
// for the product's row lock. At most two of them hold a pooled connection of the product process
// while they wait; the rest wait for a turn in the process (kit/db/row-turns.ts). Orders for other
// products go on meanwhile, where the waiting writes used to take every write connection and keep
// theirs waiting too.
import test, { type ExecutionContext } from "ava";
import knex from "knex";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { Code } from "../../kit/errors.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startFleet, type TestFleet } from "../helpers/fleet.js";
import { expectStatus } from "../helpers/status.js";
import { useStorage } from "../helpers/storage.js";

useStorage("postgres");
// Three connections for writes and one for reads (kit/db/index.ts readShareOf).
process.env.SHOP_DATABASE_POOL_MAX = "4";
// Writes wait on the lock until the test lets it go, never ending by themselves meanwhile.
process.env.SHOP_DATABASE_STATEMENT_TIMEOUT_MS = "60000";

const SALE = 6;
const hold = { seconds: "60", nanos: 0 };

/**
 * Holds the sale product's row from outside while `SALE` calls of `rpc`, made by `write(i)`,
 * reach the product service; then an order for another product must answer while two of them,
 * and no more, wait on the lock, and `meanwhile` runs. All of them succeed once the row is let
 * go. Resolves to the sale product's stock then.
 */
async function whileTheSaleWaits(
  t: ExecutionContext,
  rpc: "ReserveStock" | "ReleaseReservation",
  prepare: (fleet: TestFleet, productId: string) => Promise<void>,
  write: (fleet: TestFleet, productId: string, i: number) => Promise<unknown>,
  meanwhile?: (fleet: TestFleet, productId: string, arrived: () => number) => Promise<void>,
) {
  let arrived = 0;
  const counting: ServerMiddleware = {
    name: `count ${rpc} calls`,
    wrap: (method, next) =>
      method.rpc === rpc
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
  await prepare(fleet, sale.productId);
  arrived = 0;

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
  const writing = Array.from({ length: SALE }, (_, i) =>
    write(fleet, sale.productId, i).then(
      () => "OK",
      (error: Error) => error.message,
    ),
  );
  await until(`every ${rpc} to reach the product service`, () => arrived === SALE);
  await until(`two calls to wait for the row's lock`, async () => (await waitingOnLocks()) >= 2);

  const { order } = await fleet.orders.createOrder(
    { userId: user.userId, lines: [orderLine(other.productId, 1)], requestId: "" },
    { timeoutMs: 10_000 },
  );
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(
    await waitingOnLocks(),
    2,
    `the order answered while two of the sale's calls, and no more, waited on the lock`,
  );

  await meanwhile?.(fleet, sale.productId, () => arrived);

  await trx.rollback();
  t.deepEqual(await Promise.all(writing), Array(SALE).fill("OK"));
  const { product } = await fleet.products.getProduct({ productId: sale.productId });
  return product?.stockQuantity;
}

test("orders for other products go on while many reservations wait for one product's row", async (t) => {
  const stock = await whileTheSaleWaits(
    t,
    "ReserveStock",
    async () => {},
    (fleet, productId, i) =>
      fleet.inventory.reserveStock(
        { reservationId: `sale-${i}`, lines: [orderLine(productId, 1)], ttl: hold },
        { timeoutMs: 20_000 },
      ),
    // A reservation whose caller gives up while it waits for its turn is never written.
    async (fleet, productId, arrived) => {
      const before = arrived();
      await expectStatus(
        t,
        fleet.inventory.reserveStock(
          { reservationId: "given-up", lines: [orderLine(productId, 1)], ttl: hold },
          { timeoutMs: 300 },
        ),
        Code.DEADLINE_EXCEEDED,
      );
      t.is(arrived(), before + 1, "the product service took the call");
    },
  );
  t.is(stock, 100 - SALE, "the reservation given up took nothing");
});

test("orders for other products go on while many releases wait for one product's row", async (t) => {
  const stock = await whileTheSaleWaits(
    t,
    "ReleaseReservation",
    async (fleet, productId) => {
      for (let i = 0; i < SALE; i++) {
        await fleet.inventory.reserveStock({
          reservationId: `sale-${i}`,
          lines: [orderLine(productId, 1)],
          ttl: hold,
        });
      }
    },
    (fleet, _productId, i) =>
      fleet.inventory.releaseReservation({ reservationId: `sale-${i}` }, { timeoutMs: 20_000 }),
  );
  t.is(stock, 100, "every unit given back");
});
