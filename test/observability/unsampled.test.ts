// Spans the kit does not make: under a call whose trace is not sampled, the saga's steps, its
// transactions and its outgoing calls would record nothing, so they run in the served call's
// span and pass its trace context on. A sampled call still gets every span. OpenTelemetry runs
// here as in a service process without an exporter: the kit's default sampler follows the
// caller's decision and samples no trace of its own.
import { Metadata } from "@grpc/grpc-js";
import test from "ava";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { startTracing } from "../../kit/observability/tracing.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { eventually } from "../helpers/eventually.js";
import { captureLogger, orderLine, startFleet } from "../helpers/fleet.js";

/** Records the `traceparent` each served rpc arrived with, by rpc name. */
function traceparents(): { middleware: ServerMiddleware; seen: Map<string, string> } {
  const seen = new Map<string, string>();
  return {
    seen,
    middleware: {
      name: "traceparents",
      wrap: (method, next) => (request, ctx) => {
        const [value] = ctx.metadata.get("traceparent");
        if (typeof value === "string") seen.set(method.rpc, value);
        return next(request, ctx);
      },
    },
  };
}

test.before(() => startTracing("order", {}));

for (const flags of ["00", "01"] as const) {
  const sampled = flags === "01";
  test(`a CreateOrder whose trace is ${sampled ? "" : "not "}sampled: ${sampled ? "a span per step and per call" : "its calls carry the served call's span"}`, async (t) => {
    const traceId = `${sampled ? "b" : "a"}${"1".repeat(31)}`;
    const logs = captureLogger("order");
    const downstream = traceparents();
    const fleet = await startFleet(t, {
      loggers: { order: logs.logger },
      middleware: { user: [downstream.middleware], product: [downstream.middleware] },
    });
    const shopper = await addUser(fleet.users);
    const mug = await addProduct(fleet.products);
    const metadata = new Metadata();
    metadata.set("traceparent", `00-${traceId}-${"2".repeat(16)}-${flags}`);
    await fleet.orders.createOrder(
      { userId: shopper.userId, lines: [orderLine(mug.productId, 1)], requestId: `key-${flags}` },
      { metadata },
    );
    const served = await eventually("the CreateOrder log line", () =>
      logs.lines.find((line) => line.method === "/shop.order.v1.OrderService/CreateOrder"),
    );
    t.is(served.trace_id, traceId);
    const orderSpan = served.span_id as string;
    t.regex(orderSpan, /^[0-9a-f]{16}$/);
    t.not(orderSpan, "2".repeat(16), "the served call has a span id of its own");

    for (const rpc of ["GetUser", "ReserveStock"]) {
      const [version, trace, parent, flagsSeen] = (downstream.seen.get(rpc) ?? "").split("-");
      t.deepEqual([version, trace, flagsSeen], ["00", traceId, flags], rpc);
      if (sampled) t.not(parent, orderSpan, `${rpc}: a client span under a step span`);
      else t.is(parent, orderSpan, `${rpc}: the served call's own span, nothing made under it`);
    }
  });
}
