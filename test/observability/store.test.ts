// The store's metrics and spans come from knex's query events and transactions (kit/db/index.ts
// observeDatabase), so they hold on every engine: this file runs on better-sqlite3,
// store.sqlite3.test.ts on the sqlite3 driver and store.postgres.test.ts on PostgreSQL. The
// spans are the real OpenTelemetry SDK's, kept in its in-memory exporter for the test to read. A
// store error is logged without the user data its statement carried.
import { randomBytes } from "node:crypto";
import { Metadata } from "@grpc/grpc-js";
import { SpanStatusCode } from "@opentelemetry/api";
import test from "ava";
import type { Knex } from "knex";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { User } from "../../gen/ts/shop/user/v1/user.js";
import { Code } from "../../kit/errors.js";
import type { Metrics } from "../../kit/observability/metrics.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { eventually } from "../helpers/eventually.js";
import { captureLogger, orderLine, startFleet } from "../helpers/fleet.js";
import { recordSpans } from "../helpers/spans.js";
import { storage } from "../helpers/storage.js";

const finished = recordSpans();

interface Sample {
  labels: Record<string, string | number>;
  value: number;
  metricName?: string;
}

/** The samples of one metric as a scrape reads them (collect functions included). */
async function samples(metrics: Metrics, name: string): Promise<Sample[]> {
  const metric = metrics.registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  return (await metric.get()).values as Sample[];
}

/** The `_count` of a histogram's series whose labels include `labels`, summed. */
async function counted(metrics: Metrics, name: string, labels: Record<string, string>) {
  return (await samples(metrics, name))
    .filter(
      (sample) =>
        sample.metricName === `${name}_count` &&
        Object.entries(labels).every(([key, value]) => sample.labels[key] === value),
    )
    .reduce((sum, sample) => sum + sample.value, 0);
}

test(`statements, transactions and held reservations are measured on ${storage()}`, async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 10 });
  const { order } = await fleet.orders.createOrder({
    userId: shopper.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "store-metrics-1",
  });
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  await fleet.inventory.reserveStock({
    reservationId: "store-metrics-held",
    lines: [orderLine(mug.productId, 2)],
    ttl: { seconds: "60", nanos: 0 },
  });

  const product = fleet.product.metrics;
  t.true(
    (await counted(product, "shop_db_query_seconds", { operation: "insert", table: "products" })) >=
      1,
  );
  t.true(
    (await counted(product, "shop_db_query_seconds", {
      operation: "insert",
      table: "reservations",
    })) >= 2,
  );
  const transactions = (await samples(product, "shop_db_transaction_seconds")).filter(
    (sample) => sample.metricName === "shop_db_transaction_seconds_count" && sample.value > 0,
  );
  t.true(transactions.length > 0);
  for (const { labels } of transactions) {
    t.regex(String(labels.operation), /^(select|insert|update|delete) \w+$/);
    t.is(labels.outcome, "commit");
  }
  t.true(
    (await counted(fleet.order.metrics, "shop_db_query_seconds", {
      operation: "insert",
      table: "orders",
    })) >= 1,
  );

  // Read from the store at each scrape: one reservation is held, the order's was committed.
  const [held] = await samples(product, "shop_reservations_held");
  t.is(held?.value, 1);
  const [oldest] = await samples(product, "shop_reservation_oldest_held_seconds");
  t.true((oldest?.value ?? -1) >= 0 && (oldest?.value ?? 60) < 60, String(oldest?.value));
  // Held, but not yet due to expire.
  const [overdue] = await samples(product, "shop_reservation_overdue_seconds");
  t.is(overdue?.value, 0);
});

test(`a held reservation past its expiry counts as overdue on ${storage()}`, async (t) => {
  // A sweep that does not come during the test: nothing expires the reservation.
  const fleet = await startFleet(t, { product: { sweepMs: 3_600_000 } });
  const mug = await addProduct(fleet.products, { stock: 10 });
  await fleet.inventory.reserveStock({
    reservationId: "store-metrics-overdue",
    lines: [orderLine(mug.productId, 1)],
    ttl: { seconds: "1", nanos: 0 },
  });
  const product = fleet.product.metrics;
  const [due] = await samples(product, "shop_reservation_overdue_seconds");
  t.is(due?.value, 0);
  const late = await eventually("the reservation past its expiry", async () => {
    const [overdue] = await samples(product, "shop_reservation_overdue_seconds");
    return (overdue?.value ?? 0) > 0.5 ? overdue : undefined;
  });
  t.true((late?.value ?? 0) < 60, String(late?.value));
  const [held] = await samples(product, "shop_reservations_held");
  t.is(held?.value, 1);
});

test(`each store transaction is a span of the call that ran it on ${storage()}`, async (t) => {
  const fleet = await startFleet(t);
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 10 });
  // The call carries a trace id of its own: the other test's spans, which may still be ending
  // in the same exporter, are never mistaken for this call's.
  const traceId = randomBytes(16).toString("hex");
  const metadata = new Metadata();
  metadata.set("traceparent", `00-${traceId}-${randomBytes(8).toString("hex")}-01`);
  await fleet.orders.createOrder(
    { userId: shopper.userId, lines: [orderLine(mug.productId, 1)], requestId: "store-spans-1" },
    { metadata },
  );
  const system = storage() === "postgres" ? "postgresql" : "sqlite";
  // The server's span ends once its answer is sent, a moment after the client has it.
  const spans = await eventually("the CreateOrder span and its transactions", () => {
    const inTrace = finished
      .getFinishedSpans()
      .filter((span) => span.spanContext().traceId === traceId);
    const served = inTrace.some((span) => span.name.endsWith("OrderService/CreateOrder"));
    return served && inTrace.filter((span) => span.name.startsWith("transaction")).length >= 2
      ? inTrace
      : undefined;
  });
  const transactions = spans.filter((span) => span.name.startsWith("transaction"));
  for (const span of transactions) {
    t.regex(span.name, /^transaction (select|insert|update|delete) \w+$/);
    t.is(span.attributes["db.system.name"], system);
    // Under a span of the same trace: the rpc or saga step that ran it.
    const parent = span.parentSpanContext?.spanId;
    t.truthy(
      spans.find((other) => other.spanContext().spanId === parent),
      `${span.name} has no parent in the trace`,
    );
  }
  // Both the order service's own store and the product service's, which it called.
  t.true(transactions.some((span) => / orders$/.test(span.name)));
  t.true(transactions.some((span) => / reservations$/.test(span.name)));
});

/** Every insert into `table` fails from now on, as a bug of ours or a broken store would. */
async function refuseInserts(db: Knex, table: string) {
  if (db.client.config.client === "pg") {
    await db.raw(
      `create function refuse_${table}() returns trigger language plpgsql as $$ begin raise exception 'refused'; end $$`,
    );
    await db.raw(
      `create trigger refuse_${table} before insert on ${table} for each row execute function refuse_${table}()`,
    );
  } else {
    await db.raw(
      `create trigger refuse_${table} before insert on ${table} begin select raise(abort, 'refused'); end`,
    );
  }
}

/** One ReserveStock in a trace of its own, and the spans of its store transactions. */
async function reservedInTrace(
  fleet: Awaited<ReturnType<typeof startFleet>>,
  lines: ReturnType<typeof orderLine>[],
) {
  const traceId = randomBytes(16).toString("hex");
  const metadata = new Metadata();
  metadata.set("traceparent", `00-${traceId}-${randomBytes(8).toString("hex")}-01`);
  const reservationId = `spans-${traceId}`;
  const error = await fleet.inventory
    .reserveStock({ reservationId, lines, ttl: { seconds: "60", nanos: 0 } }, { metadata })
    .then(
      () => undefined,
      (refused: { code: number }) => refused,
    );
  const transactions = await eventually("the ReserveStock span and its transaction", () => {
    const inTrace = finished
      .getFinishedSpans()
      .filter((span) => span.spanContext().traceId === traceId);
    const served = inTrace.some((span) => span.name.endsWith("InventoryService/ReserveStock"));
    const found = inTrace.filter((span) => span.name === "transaction insert reservations");
    return served && found.length > 0 ? found : undefined;
  });
  return { code: error?.code, transactions };
}

test(`a transaction undone to refuse the caller is no error span; a failed one is, on ${storage()}`, async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 1 });
  const short = await reservedInTrace(fleet, [orderLine(mug.productId, 2)]);
  t.is(short.code, Code.FAILED_PRECONDITION);
  for (const span of short.transactions) {
    t.is(span.status.code, SpanStatusCode.UNSET, JSON.stringify(span.status));
    t.deepEqual(span.events, []);
  }

  // A failure of the store is still an error of its transaction.
  await refuseInserts(fleet.product.db, "reservation_lines");
  const failed = await reservedInTrace(fleet, [orderLine(mug.productId, 1)]);
  t.is(failed.code, Code.INTERNAL);
  t.true(failed.transactions.every((span) => span.status.code === SpanStatusCode.ERROR));
});

test(`a store error's log line keeps the user's data out on ${storage()}`, async (t) => {
  const log = captureLogger("user");
  const fleet = await startFleet(t, { loggers: { user: log.logger } });
  // Every insert into users fails: a bug of ours, logged at error level with its cause.
  await refuseInserts(fleet.user.db, "users");
  const email = `private.${randomBytes(4).toString("hex")}@example.com`;
  const error = await t.throwsAsync(
    fleet.users.createUser({ user: User.fromPartial({ email, displayName: "Private Person" }) }),
  );
  t.is((error as { code?: number }).code, Code.INTERNAL);
  const failed = await eventually("the call's log line", () =>
    log.lines.find((line) => line.msg === "rpc failed"),
  );
  t.regex(JSON.stringify(failed.err), /refused/, "the cause is logged");
  t.false(JSON.stringify(log.lines).includes(email), "the email is not");
  t.false(JSON.stringify(log.lines).includes("Private Person"), "nor the name");
});
