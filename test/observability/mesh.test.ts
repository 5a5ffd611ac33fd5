// Observability end to end: `npm run mesh -- --observe` with the real Prometheus (Debian's
// package) scraping every replica and Envoy's stats listener through a configuration generated
// from the registry, the committed rules and dashboard checked against it, and one trace of a
// CreateOrder through Envoy received over OTLP/gRPC by a receiver built on the official
// opentelemetry-proto stubs (test/helpers/otlp-receiver.py).
import { readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { Code } from "../../kit/errors.js";
import { repoRoot } from "../../scripts/lib/launcher.js";
import { eventually } from "../helpers/eventually.js";
import { exec } from "../helpers/exec.js";
import { orderLine } from "../helpers/fleet.js";
import { MeshUnderTest, newProduct, newUser, tag, withId } from "../helpers/front-door.js";
import { startLaunch } from "../helpers/launch.js";
import { type OtlpReceiver, type ReceivedSpan, startOtlpReceiver } from "../helpers/otlp.js";
import { expectStatus } from "../helpers/status.js";

const mesh = new MeshUnderTest();
let receiver: OtlpReceiver;
let prometheus: string;

test.before(async () => {
  receiver = await startOtlpReceiver();
  mesh.launched = await startLaunch("mesh", {
    replicas: 1,
    args: ["--observe", "--no-seed"],
    env: {
      SHOP_LOG_LEVEL: "info",
      SHOP_PROMETHEUS_SCRAPE_INTERVAL: "1s",
      OTEL_EXPORTER_OTLP_ENDPOINT: receiver.endpoint,
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      // Every trace, so the one this test makes is recorded whatever the default share.
      OTEL_TRACES_SAMPLER: "parentbased_always_on",
      OTEL_BSP_SCHEDULE_DELAY: "200",
    },
  });
  const url = /prometheus\s+(http:\/\/\S+)/.exec(mesh.launch.banner)?.[1];
  if (!url) throw new Error(`no Prometheus URL in the banner:\n${mesh.launch.banner}`);
  prometheus = url;
});

test.after.always(async () => {
  await mesh.stop();
  await receiver?.stop();
});

interface Sample {
  metric: Record<string, string>;
  value: [number, string];
}

/** GET /api/v1/query: the instant vector `query` evaluates to. */
async function query(promql: string): Promise<Sample[]> {
  const response = await fetch(`${prometheus}/api/v1/query?query=${encodeURIComponent(promql)}`);
  const body = (await response.json()) as {
    status: string;
    error?: string;
    data?: { result: Sample[] };
  };
  if (body.status !== "success") throw new Error(`${promql}: ${body.error}`);
  return body.data?.result ?? [];
}

/** Waits until `promql` evaluates to at least one sample, and gives them. */
const series = (promql: string) =>
  eventually(
    `${promql} in a scrape`,
    async () => {
      const samples = await query(promql);
      return samples.length > 0 ? samples : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 250 },
  );

/** Waits until `promql` evaluates to exactly `expected` (one sample); scrapes come every second. */
async function expectValue(
  t: { is: (a: unknown, b: unknown, m?: string) => void },
  promql: string,
  expected: number,
) {
  const value = await eventually(
    `${promql} == ${expected}`,
    async () => {
      const [sample, ...more] = await query(promql);
      if (!sample || more.length > 0) return undefined;
      const got = Number(sample.value[1]);
      return got === expected ? got : undefined;
    },
    { timeoutMs: 20_000, intervalMs: 250 },
  ).catch(async (error: Error) => {
    throw new Error(`${error.message}; last: ${JSON.stringify(await query(promql))}`);
  });
  t.is(value, expected, promql);
}

test.serial(
  "Prometheus counts exactly the calls made, in every service, at Envoy and in the business metrics",
  async (t) => {
    const c = mesh.clients();
    t.teardown(() => c.close());
    const user = await newUser(c);
    const product = await newProduct(c, 10);
    for (let i = 0; i < 2; i++) await c.products.getProduct({ productId: product.productId });
    for (let i = 0; i < 3; i++) {
      await expectStatus(
        t,
        c.products.getProduct({ productId: `prd_missing_${i}` }),
        Code.NOT_FOUND,
      );
    }
    await c.orders.createOrder(
      { userId: user.userId, lines: [orderLine(product.productId, 2)], requestId: tag("observed") },
      withId(tag("observed-order")),
    );
    // Refused for stock after its order was written: no order placed, so none failed.
    await expectStatus(
      t,
      c.orders.createOrder({ userId: user.userId, lines: [orderLine(product.productId, 9)] }),
      Code.FAILED_PRECONDITION,
    );

    const served = (code: string) =>
      `sum(grpc_server_handled_total{job="product",grpc_service="shop.product.v1.ProductService",grpc_method="GetProduct",grpc_code="${code}"})`;
    await expectValue(t, served("OK"), 2);
    await expectValue(t, served("NotFound"), 3);
    await expectValue(
      t,
      `sum(grpc_server_started_total{job="product",grpc_method="GetProduct"})`,
      5,
    );
    await expectValue(
      t,
      `sum(grpc_server_handling_seconds_count{job="product",grpc_method="GetProduct"})`,
      5,
    );
    // The order service's own calls, in the client metrics.
    for (const [method, code, calls] of [
      ["GetUser", "OK", 2],
      ["ReserveStock", "OK", 1],
      ["ReserveStock", "FailedPrecondition", 1],
    ] as const) {
      await expectValue(
        t,
        `sum(grpc_client_handled_total{job="order",grpc_method="${method}",grpc_code="${code}"})`,
        calls,
      );
    }
    // Envoy's grpc_stats, scraped from its stats listener, with the whole proto service name.
    await expectValue(
      t,
      `sum(envoy_cluster_grpc_total{envoy_cluster_name="product",envoy_grpc_bridge_service="shop.product.v1.ProductService",envoy_grpc_bridge_method="GetProduct"})`,
      5,
    );
    // Business metrics: one confirmed order, one withdrawn; its reservation committed, so none
    // is held.
    await expectValue(t, `sum(shop_orders_total{outcome="confirmed"})`, 1);
    await expectValue(t, `sum(shop_orders_total{outcome="withdrawn"})`, 1);
    await expectValue(t, `sum(shop_orders_total{outcome="failed"})`, 0);
    await expectValue(t, `max(shop_reservations_held)`, 0);
    // Store and process metrics of every service. Each job is scraped on its own schedule, so
    // a job's latest scrape may still predate its calls: wait for one that has them.
    for (const job of ["user", "product", "order"]) {
      t.true((await series(`shop_db_query_seconds_count{job="${job}"}`)).length > 0, job);
      t.is((await query(`process_cpu_seconds_total{job="${job}"}`)).length, 1, job);
    }
    t.true(
      (
        await series(
          `shop_db_transaction_seconds_count{job="product",operation="insert reservations",outcome="commit"}`,
        )
      ).length > 0,
    );
    await expectValue(t, "count(up == 1)", 4);
  },
);

test.serial(
  "the stats listener serves Prometheus text and readiness, and nothing else of the admin interface",
  async (t) => {
    const stats = `http://127.0.0.1:${mesh.envoy.statsPort}`;
    const metrics = await fetch(`${stats}/metrics`);
    t.is(metrics.status, 200);
    t.regex(await metrics.text(), /^envoy_cluster_upstream_rq_total\{/m);
    // Kubernetes' readiness probe asks this.
    const ready = await fetch(`${stats}/ready`);
    t.is(ready.status, 200);
    t.is((await ready.text()).trim(), "LIVE");
    // The admin would read a query: a filter regex over every stat name, or its other options.
    const queries = ["/metrics?filter=.*", "/metrics?usedonly", "/ready?x=1"];
    for (const adminPath of [
      "/clusters",
      "/stats",
      "/quitquitquit",
      "/stats/prometheus",
      ...queries,
    ]) {
      const response = await fetch(`${stats}${adminPath}`, {
        method: adminPath === "/quitquitquit" ? "POST" : "GET",
      });
      t.is(response.status, 404, adminPath);
    }
  },
);

test.serial(
  "the committed rules load and pass promtool; every metric a rule or a panel reads exists",
  async (t) => {
    const deploy = path.join(repoRoot, "deploy", "prometheus");
    const promtool = async (...args: string[]) => {
      const { code, stdout, stderr } = await exec("promtool", args, { cwd: deploy });
      t.is(code, 0, `promtool ${args.join(" ")}: ${stdout}${stderr}`);
    };
    await promtool("check", "rules", "rules.yml");
    await promtool("test", "rules", "rules.test.yml");
    await promtool("check", "config", "prometheus.yml");
    await promtool("check", "config", path.join(mesh.plan.dataDir, "prometheus", "prometheus.yml"));

    const rules = (await (await fetch(`${prometheus}/api/v1/rules`)).json()) as {
      data: {
        groups: { name: string; rules: { name: string; health: string; query: string }[] }[];
      };
    };
    const loaded = rules.data.groups.flatMap((group) => group.rules);
    t.true(loaded.length >= 9, JSON.stringify(rules));
    t.deepEqual(
      loaded.filter((rule) => rule.health === "err"),
      [],
    );

    const dashboard = JSON.parse(
      readFileSync(path.join(repoRoot, "deploy", "grafana", "shopmesh.json"), "utf8"),
    ) as { panels: { title: string; targets?: { expr: string }[] }[] };
    const scoped = dashboard.panels.flatMap((panel) =>
      (panel.targets ?? []).map((target) => target.expr),
    );
    t.true(scoped.length >= 15);
    // Every series a panel reads is of the namespace picked, so two meshes in one Prometheus
    // never share a line. A mesh on one host has no namespace label: Grafana's empty value.
    const NAMESPACE = 'namespace="$namespace"';
    for (const expr of scoped) {
      t.is(expr.split(NAMESPACE).length - 1, metricNames(expr).length, expr);
    }
    const expressions = scoped.map((expr) => expr.replaceAll(NAMESPACE, 'namespace=""'));
    const gauge = expressions.find((expr) => expr.startsWith("nodejs_eventloop_lag")) as string;
    t.true((await query(gauge)).length > 0, gauge);
    const names = new Set(
      (
        (await (await fetch(`${prometheus}/api/v1/label/__name__/values`)).json()) as {
          data: string[];
        }
      ).data,
    );
    // A recording rule's series appears only after its first evaluations; its loaded rule is
    // what proves the name.
    const recorded = new Set(loaded.map((rule) => rule.name));
    for (const expr of expressions) {
      await query(expr); // rejects with Prometheus's error for a query it refuses
    }
    // Every metric a panel or a rule reads exists, so no panel stays empty and no alert stays
    // silent for a misspelt name. The busy counter has a series only once SQLite has been busy.
    for (const expr of [...expressions, ...loaded.map((rule) => rule.query)]) {
      for (const name of metricNames(expr)) {
        if (name === "shop_db_busy_total") continue;
        t.true(names.has(name) || recorded.has(name), `${name} in ${expr}`);
      }
    }
  },
);

const KEYWORDS = new Set(["by", "without", "on", "ignoring", "and", "or", "unless", "bool"]);

/** The metric names a PromQL expression reads: identifiers that are not functions or labels. */
function metricNames(expr: string): string[] {
  const bare = expr
    .replace(/"[^"]*"/g, "")
    .replace(/\{[^}]*\}/g, "")
    .replace(/\[[^\]]*\]/g, "")
    .replace(/\b(by|without|on|ignoring)\s*\([^)]*\)/g, "");
  return [...bare.matchAll(/([a-zA-Z_:][\w:]*)(\s*\()?/g)]
    .filter(([, name, call]) => call === undefined && !KEYWORDS.has(name as string))
    .map(([, name]) => name as string);
}

/** The spans of one trace, once the trace has them from every one of `services`. */
function traceOf(traceId: string, services: readonly string[]): ReceivedSpan[] | undefined {
  const spans = receiver.spans().filter((span) => span.traceId === traceId);
  return services.every((service) => spans.some((span) => span.service === service))
    ? spans
    : undefined;
}

test.serial(
  "one CreateOrder through Envoy is one trace: Envoy's span the root, then order, user and product",
  async (t) => {
    const c = mesh.clients();
    t.teardown(() => c.close());
    const user = await newUser(c);
    const product = await newProduct(c, 5);
    const requestId = tag("traced");
    const { order } = await c.orders.createOrder(
      { userId: user.userId, lines: [orderLine(product.productId, 1)], requestId },
      withId(requestId),
    );

    // Envoy's span carries the call's x-request-id.
    const edge = await eventually(
      "Envoy's span of the call",
      () =>
        receiver
          .spans()
          .find(
            (span) =>
              span.service === "envoy" &&
              span.attributes?.some(
                (a) => a.key === "guid:x-request-id" && a.value.stringValue === requestId,
              ),
          ),
      { timeoutMs: 30_000, intervalMs: 200 },
    );
    t.is(edge.parentSpanId, "", "Envoy's span is the root");
    const spans = await eventually("the trace from every service", () =>
      traceOf(edge.traceId, ["envoy", "order", "user", "product"]),
    );
    const byId = new Map(spans.map((span) => [span.spanId, span]));
    // Every span but the root hangs off a span of the same trace.
    for (const span of spans) {
      if (span !== edge)
        t.true(byId.has(span.parentSpanId), `${span.service} ${span.name} has its parent`);
    }
    const one = (service: string, name: string) => {
      const found = spans.filter((span) => span.service === service && span.name === name);
      t.is(
        found.length,
        1,
        `${service} ${name}: ${JSON.stringify(spans.map((s) => `${s.service} ${s.name}`))}`,
      );
      return found[0] as ReceivedSpan;
    };
    const createOrder = one("order", "shop.order.v1.OrderService/CreateOrder");
    t.is(createOrder.parentSpanId, edge.spanId);
    t.is(createOrder.kind, "SPAN_KIND_SERVER");
    const ancestors = (span: ReceivedSpan): string[] => {
      const parent = byId.get(span.parentSpanId);
      return parent ? [parent.name, ...ancestors(parent)] : [];
    };
    // Each callee's server span is the child of the order service's client span of that rpc,
    // inside the saga step that made it.
    for (const [service, rpc, step] of [
      ["user", "shop.user.v1.UserService/GetUser", "saga.check_user"],
      ["product", "shop.product.v1.InventoryService/ReserveStock", "saga.reserve"],
    ] as const) {
      const server = one(service, rpc);
      const client = byId.get(server.parentSpanId) as ReceivedSpan;
      t.is(client.service, "order");
      t.is(client.name, rpc);
      t.is(client.kind, "SPAN_KIND_CLIENT");
      t.deepEqual(ancestors(client).slice(0, 2), [step, createOrder.name]);
    }
    // The store's transactions, as children of the spans that ran them.
    t.is(byId.get(one("order", "transaction insert orders").parentSpanId)?.name, "saga.write");
    t.is(one("order", "saga.confirm").parentSpanId, createOrder.spanId);
    t.is(
      byId.get(one("product", "transaction insert reservations").parentSpanId)?.name,
      "shop.product.v1.InventoryService/ReserveStock",
    );

    // The order replica's log line of the call carries the trace and its own span.
    const log = path.join(mesh.plan.logDir, "order-1.log");
    const line = await eventually("the CreateOrder log line", () =>
      readFileSync(log, "utf8")
        .split("\n")
        .filter((entry) => entry.startsWith("{"))
        .map((entry) => JSON.parse(entry) as Record<string, unknown>)
        .find((entry) => entry.trace_id === edge.traceId && entry.span_id === createOrder.spanId),
    );
    t.is(line.trace_id, edge.traceId);
    t.truthy(order?.orderId);
  },
);
