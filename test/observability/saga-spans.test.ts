// The saga's steps are spans of the real OpenTelemetry SDK, kept in its in-memory exporter: a
// step that fails says so, even when the saga goes on after it (a release left to the sweep).
import { SpanStatusCode } from "@opentelemetry/api";
import test from "ava";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { recordSpans } from "../helpers/spans.js";

const finished = recordSpans();

test("a release that fails marks its saga step's span as an error", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 3 });
  // The stock is taken and the answer lost; giving it back fails too.
  fleet.product.faults.set("ReserveStock", { code: Code.UNAVAILABLE, afterHandler: true });
  fleet.product.faults.set("ReleaseReservation", { code: Code.UNAVAILABLE });

  const error = await t.throwsAsync(
    fleet.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(mug.productId, 1)],
      requestId: "release-fails",
    }),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.UNAVAILABLE);

  const releases = finished.getFinishedSpans().filter((span) => span.name === "saga.release");
  t.true(releases.length > 0, "a saga.release span");
  for (const span of releases) {
    t.is(span.status.code, SpanStatusCode.ERROR);
    t.regex(span.status.message ?? "", /injected fault/);
  }
});

test("every span lies within its parent's, to the microsecond", async (t) => {
  finished.reset();
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 100 });
  for (let i = 0; i < 20; i++) {
    await fleet.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(mug.productId, 1)],
      requestId: `within-${i}`,
    });
  }
  const spans = finished.getFinishedSpans();
  const byId = new Map(spans.map((span) => [span.spanContext().spanId, span]));
  const micros = ([seconds, nanos]: [number, number]) => seconds * 1e6 + nanos / 1e3;
  let pairs = 0;
  const outside: string[] = [];
  for (const span of spans) {
    const parent = byId.get(span.parentSpanContext?.spanId ?? "");
    if (!parent) continue;
    pairs++;
    const early = micros(parent.startTime) - micros(span.startTime);
    const late = micros(span.endTime) - micros(parent.endTime);
    if (early > 1 || late > 1) outside.push(`${span.name} in ${parent.name}: ${early}, ${late} µs`);
  }
  t.true(pairs >= 100, `${pairs} pairs`);
  t.deepEqual(outside, []);
});
