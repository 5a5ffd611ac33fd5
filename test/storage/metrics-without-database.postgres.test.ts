// A scrape of product's metrics while its database cannot answer. The reservation gauges read
// the store at each scrape; a read that fails must not fail the whole scrape, and every other
// series with it, during the outage those series describe.
import "../helpers/on-postgres.js";
import test from "ava";
import knex from "knex";
import { startFleet } from "../helpers/fleet.js";

// A read that waits on the lock below gives up after a second, not the default five.
process.env.SHOP_DATABASE_STATEMENT_TIMEOUT_MS = "1000";

test("product's metrics answer while its database cannot: the store's gauges NaN, the rest as before", async (t) => {
  const fleet = await startFleet(t);
  await fleet.products.listProducts({ pageSize: 1 });
  const admin = knex({
    client: "pg",
    connection: String(fleet.product.db.client.config.connection.connectionString),
    pool: { min: 0, max: 1 },
  });
  t.teardown(() => admin.destroy());
  const holding = await admin.transaction();
  t.teardown(() => holding.rollback().catch(() => {}));
  await holding.raw('LOCK TABLE "product".reservations IN ACCESS EXCLUSIVE MODE');

  const text = await fleet.product.metrics.text();
  t.regex(text, /^shop_reservations_held nan$/im);
  t.regex(text, /^shop_reservation_oldest_held_seconds nan$/im);
  t.regex(text, /^grpc_server_handled_total\{.*grpc_method="ListProducts".*\} 1$/m);

  await holding.rollback();
  t.regex(await fleet.product.metrics.text(), /^shop_reservations_held 0$/m);
});
