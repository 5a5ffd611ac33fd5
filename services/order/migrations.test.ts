// The orders schema's migrations on a database that already holds orders, as an upgrade finds
// it; again on the other storages through services/handlers.*.test.ts.
import test, { type ExecutionContext } from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { isUniqueViolation, type Knex } from "../../kit/db/index.js";
import { newId } from "../../kit/ids.js";
import { emptyDatabase, migratedTo, migratorOf, onPostgres } from "../../test/helpers/storage.js";
import { migrations } from "./migrations/index.js";
import { IdempotencyKeyTaken, OrderStore } from "./store.js";

const {
  ORDER_STATE_CONFIRMED: CONFIRMED,
  ORDER_STATE_CANCELLING: CANCELLING,
  ORDER_STATE_CANCELLED: CANCELLED,
  ORDER_STATE_FAILED: FAILED,
} = OrderState;

const open = (t: ExecutionContext, location: string, upTo?: number) =>
  migratedTo(t, "order", location, upTo);

const migrator = () => migratorOf("order");

const applied = async (db: Knex) =>
  (await db("knex_migrations").orderBy("id").select("name")).map((row) => row.name);

/** Runs the downs of the migrations from the newest to `name`, that one included. */
async function rollBack(db: Knex, name: string) {
  while ((await applied(db)).includes(name)) await db.migrate.down(migrator());
}

/** Writes a PENDING order holding `key` for `userId`. */
const place = (store: OrderStore, userId: string, key: string) => {
  const orderId = newId("ord");
  return store.insert({
    orderId,
    userId,
    idempotencyKey: key,
    reservationId: `order:${orderId}`,
    lines: [{ productId: "prd_mug", quantity: 1 }],
  });
};

test("0002 keeps the orders written before it and makes request_id unique per user", async (t) => {
  const location = await emptyDatabase(t);
  const old = await open(t, location, 1);
  const before = new OrderStore({ db: old, reads: old });
  await place(before, "usr_alice", "k-1");
  await place(before, "usr_bob", "k-2");
  // A failed order has freed its key, and a retry took it again.
  const failed = await place(before, "usr_alice", "k-3");
  await before.fail(failed.orderId);
  await place(before, "usr_alice", "k-3");
  const rows = await old("orders").orderBy("seq");
  const lines = await old("order_lines").orderBy(["order_id", "line_no"]);
  await old.destroy();

  const db = await open(t, location, 2);
  t.deepEqual(await applied(db), ["0001_create_orders", "0002_request_key_per_user"]);
  t.deepEqual(await db("orders").orderBy("seq"), rows);
  t.deepEqual(await db("order_lines").orderBy(["order_id", "line_no"]), lines);

  const store = new OrderStore({ db: db, reads: db });
  const bobs = await place(store, "usr_bob", "k-1");
  await t.throwsAsync(place(store, "usr_alice", "k-1"), { instanceOf: IdempotencyKeyTaken });
  await t.throwsAsync(place(store, "usr_bob", "k-1"), { instanceOf: IdempotencyKeyTaken });
  t.is((await store.findByIdempotencyKey("usr_bob", "k-1"))?.order.orderId, bobs.orderId);
  t.is((await store.findByIdempotencyKey("usr_alice", "k-1"))?.order.userId, "usr_alice");
  t.is(await store.findByIdempotencyKey("usr_carol", "k-1"), undefined);
});

test("0002's down makes request_id unique across users again, once no two users share one", async (t) => {
  const db = await open(t, await emptyDatabase(t), 2);
  const store = new OrderStore({ db: db, reads: db });
  await place(store, "usr_alice", "k-1");
  const bobs = await place(store, "usr_bob", "k-1");

  // better-sqlite3's errors are not instances of this realm's Error: hence `any`.
  const refused = await t.throwsAsync(db.migrate.down(migrator()), { any: true });
  t.true(isUniqueViolation(refused), String(refused));
  t.deepEqual(await applied(db), ["0001_create_orders", "0002_request_key_per_user"]);
  t.is(
    await db("orders")
      .count({ n: "*" })
      .first()
      .then((row) => Number(row?.n)),
    2,
  );

  await store.fail(bobs.orderId);
  await db.migrate.down(migrator());
  t.deepEqual(await applied(db), ["0001_create_orders"]);
  await t.throwsAsync(place(store, "usr_bob", "k-1"), { instanceOf: IdempotencyKeyTaken });

  await db.migrate.latest(migrator());
  await place(store, "usr_bob", "k-1");
  t.deepEqual(
    await applied(db),
    migrations.map((migration) => migration.name),
  );
});

test("0003 keeps the orders written before it, cancelled ones too; its down drops cancel_time", async (t) => {
  const location = await emptyDatabase(t);
  const old = await open(t, location, 2);
  const before = new OrderStore({ db: old, reads: old });
  const cancelled = await place(before, "usr_alice", "k-1");
  // PENDING → CONFIRMED → CANCELLING → CANCELLED, as an older replica wrote them.
  for (const to of [CONFIRMED, CANCELLING, CANCELLED]) {
    await old("orders").where({ order_id: cancelled.orderId }).update({ state: to });
  }
  await old.destroy();

  const db = await open(t, location);
  const store = new OrderStore({ db: db, reads: db });
  const read = await store.get(cancelled.orderId);
  t.is(read.order.state, CANCELLED);
  t.is(read.cancellingSince, undefined, "no time it never recorded");
  const placed = await place(store, "usr_bob", "k-1");
  await store.transition(placed.orderId, [OrderState.ORDER_STATE_PENDING], CONFIRMED);
  await store.transition(placed.orderId, [CONFIRMED], CANCELLING, 1_700_000_000_000);
  t.deepEqual((await store.get(placed.orderId)).cancellingSince, new Date(1_700_000_000_000));

  await rollBack(db, "0003_cancel_time");
  t.false(await db.schema.hasColumn("orders", "cancel_time"));
  await db.migrate.latest(migrator());
  t.true(await db.schema.hasColumn("orders", "cancel_time"));
});

test("0004 keeps the orders written before it, confirmed ones too; its down drops confirm_time", async (t) => {
  const location = await emptyDatabase(t);
  const old = await open(t, location, 3);
  const confirmed = await place(new OrderStore({ db: old, reads: old }), "usr_alice", "k-1");
  // Confirmed as an older replica confirmed it.
  await old("orders").where({ order_id: confirmed.orderId }).update({ state: CONFIRMED });
  await old.destroy();

  const db = await open(t, location);
  const store = new OrderStore({ db: db, reads: db });
  const read = await store.get(confirmed.orderId);
  t.is(read.order.state, CONFIRMED);
  t.is(read.confirmedAt, undefined, "no time it never recorded");
  const placed = await place(store, "usr_bob", "k-1");
  const prices = { currencyCode: "EUR", totalMinor: 100n, unitPricesMinor: [100n] };
  t.true(await store.confirm(placed.orderId, prices, 1_700_000_000_000));
  t.deepEqual((await store.get(placed.orderId)).confirmedAt, new Date(1_700_000_000_000));

  await rollBack(db, "0004_confirm_time");
  t.false(await db.schema.hasColumn("orders", "confirm_time"));
  t.true(await db.schema.hasColumn("orders", "cancel_time"));
  await db.migrate.latest(migrator());
  t.true(await db.schema.hasColumn("orders", "confirm_time"));
});

test("0005 keeps the orders written before it in every read; its down drops withdrawn", async (t) => {
  const location = await emptyDatabase(t);
  const old = await open(t, location, 4);
  const before = new OrderStore({ db: old, reads: old });
  const failed = await place(before, "usr_alice", "k-1");
  await old("orders").where({ order_id: failed.orderId }).update({ state: FAILED });
  await old.destroy();

  const db = await open(t, location);
  const store = new OrderStore({ db: db, reads: db });
  t.is((await store.get(failed.orderId)).order.state, FAILED);
  const refused = await place(store, "usr_bob", "k-1");
  t.true(await store.fail(refused.orderId, true));
  t.is(await store.find(refused.orderId), undefined, "a withdrawn order is not shown");
  const listed = await store.list(10, undefined, undefined, { userId: "" });
  t.deepEqual(
    listed.orders.map((order) => order.orderId),
    [failed.orderId],
  );

  await rollBack(db, "0005_withdrawn");
  t.false(await db.schema.hasColumn("orders", "withdrawn"));
  await db.migrate.latest(migrator());
  t.true(await db.schema.hasColumn("orders", "withdrawn"));
});

test("0006: the reconciler finds the withdrawn orders by their index, not by reading every failed one", async (t) => {
  const db = await open(t, await emptyDatabase(t));
  const store = new OrderStore({ db: db, reads: db });
  const kept = await place(store, "usr_alice", "k-1");
  t.true(await store.fail(kept.orderId));
  await store.markReleased(kept.orderId);
  const refused = await place(store, "usr_bob", "k-1");
  t.true(await store.fail(refused.orderId, true));
  await store.markReleased(refused.orderId);
  const unsettled = await store.unsettled(0, 10);
  t.deepEqual(
    unsettled.map((order) => order.orderId),
    [refused.orderId],
    "a failed order released for good is not read again; a withdrawn one is, until deleted",
  );
  if (onPostgres()) return;
  // SQLite's plan for the reconciler's query: the failed orders reached through the index.
  let statement: { sql: string; bindings: Knex.RawBinding[] } | undefined;
  const seen = (query: { sql: string; bindings: Knex.RawBinding[] }) => {
    statement = query;
  };
  db.on("query", seen);
  await store.unsettled(0, 10);
  db.off("query", seen);
  const plan = await db.raw(`EXPLAIN QUERY PLAN ${statement?.sql}`, statement?.bindings ?? []);
  t.regex(JSON.stringify(plan), /orders_withdrawn_index/);
});

test("0007 leaves the orders written before it unclaimed for the reconciler; its down drops the lease", async (t) => {
  const location = await emptyDatabase(t);
  const old = await open(t, location, 6);
  const failed = await place(new OrderStore({ db: old, reads: old }), "usr_alice", "k-1");
  await old("orders").where({ order_id: failed.orderId }).update({ state: FAILED });
  await old.destroy();

  const db = await open(t, location);
  const store = new OrderStore({ db: db, reads: db });
  const [unsettled] = await store.unsettled(0, 10);
  t.is(unsettled?.orderId, failed.orderId);
  const now = Date.now();
  const lease = now + 60_000;
  t.deepEqual(
    await store.claimForReconcile([failed.orderId], 0, now, lease),
    new Set([failed.orderId]),
  );
  // Held by that run: no other run reads or takes it until the lease ends, or the run lets go.
  t.deepEqual(await store.unsettled(0, 10, [], now + 1), []);
  t.deepEqual(await store.claimForReconcile([failed.orderId], 0, now + 1, lease), new Set());
  t.is((await store.unsettled(0, 10, [], lease)).length, 1);
  await store.unclaim([failed.orderId], lease);
  t.is((await store.unsettled(0, 10, [], now + 1)).length, 1);

  await rollBack(db, "0007_reconcile_lease");
  t.false(await db.schema.hasColumn("orders", "reconcile_until"));
  await db.migrate.latest(migrator());
  t.true(await db.schema.hasColumn("orders", "reconcile_until"));
});

test("0008: on PostgreSQL, the reconciler reads its orders through their indexes on a large table", async (t) => {
  if (!onPostgres()) return t.pass("SQLite reads them through its indexes by OR (0006's test)");
  const db = await open(t, await emptyDatabase(t));
  // Many orders, all settled: one in seven failed, its reservation released for good; one
  // in seven cancelled; the rest confirmed. Only a failed one is ever marked released, so the
  // planner, reading the state and the mark apart, expects many failed ones left unreleased.
  await db.transaction(async (trx) => {
    // However loaded the machine: the store's own statements keep their timeout.
    await trx.raw("SET LOCAL statement_timeout = 0");
    await trx.raw(
      `INSERT INTO orders (order_id, user_id, request_id, reservation_id, state, currency_code,
       total_minor, released, create_time, update_time)
     SELECT 'ord_' || i, 'usr_' || (i % 1000), 'req_' || i, 'order:ord_' || i,
       CASE i % 7 WHEN 0 THEN ?::integer WHEN 1 THEN ?::integer ELSE ?::integer END, 'EUR', 100,
       i % 7 = 0, 0, 0
     FROM generate_series(1, 50000) AS i`,
      [FAILED, CANCELLED, CONFIRMED],
    );
  });
  await db.raw("ANALYZE orders");
  const store = new OrderStore({ db, reads: db });
  let statement: { sql: string; bindings: Knex.RawBinding[] } | undefined;
  const seen = (query: { sql: string; bindings: Knex.RawBinding[] }) => {
    statement = query;
  };
  db.on("query", seen);
  t.deepEqual(await store.unsettled(Date.now() - 60_000, 100), []);
  db.off("query", seen);
  // knex hands PostgreSQL's statement over numbered ($1): raw takes it with `?`.
  const sql = statement?.sql.replace(/\$\d+/g, "?");
  const plan = await db.raw(`EXPLAIN ${sql}`, statement?.bindings ?? []);
  t.notRegex(JSON.stringify(plan.rows), /Seq Scan/);
  await rollBack(db, "0008_state_statistics");
  await db.migrate.latest(migrator());
});
