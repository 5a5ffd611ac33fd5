// npm run mesh: the production shape on this machine. Envoy on 127.0.0.1:8080 in front of two
// replicas of every registered service (replica i on its port + 10 × (i − 1)); callers dial every
// replica of what they call directly, round_robin; the replicas of a service share one SQLite
// file under data/mesh, or, with --postgres, one database on a PostgreSQL server this launch
// starts in data/mesh/postgres (SHOP_DATABASE_URL points them at a server of your own). Demo
// data on the first run (--no-seed or SHOP_SEED=false to skip), one ready banner, and Ctrl-C
// stops everything. With --observe, Prometheus too (SHOP_PROMETHEUS_PORT, 9090), scraping every
// replica and Envoy, its URL in the banner. See deploy/README.md.
import { env } from "../kit/config.js";
import { registry } from "../services/registry.js";
import {
  authFlag,
  certFile,
  grpcurlCommand,
  launchAccess,
  MESH_BANNER_END,
  onPostgres,
  READY,
  shellJson,
  shortPath,
  storageLine,
  tokenLines,
} from "./lib/banner.js";
import { LaunchError, launchFlags, refuseDeploymentSettings } from "./lib/launcher.js";
import { type FleetPlan, HOST, meshPlan, PROMETHEUS_PORT } from "./lib/plan.js";
import { type LocalPostgres, launchPostgres } from "./lib/postgres.js";
import { type DemoData, seedDemo } from "./lib/seed.js";
import { Supervisor } from "./lib/supervisor.js";

const flags = launchFlags("npm run mesh", {
  "--no-seed": "no demo data on the first run (or SHOP_SEED=false)",
  "--observe": "Prometheus too, scraping every replica and Envoy",
  "--postgres": "one PostgreSQL server for every service, started in the data directory",
});
const seed = !flags.has("--no-seed") && env.bool("SHOP_SEED", true);
const observe = flags.has("--observe");
const postgres = flags.has("--postgres");
const supervisor = new Supervisor();

function banner(
  plan: FleetPlan,
  envoy: NonNullable<FleetPlan["envoy"]>,
  demo: DemoData,
  tokens: string[],
  observed: { prometheus?: string; metrics: string[] },
  server?: LocalPostgres,
): string {
  const front = `${HOST}:${envoy.port}`;
  const dir = plan.tls as string;
  const ca = `-cacert ${certFile(dir, "ca.crt")}`;
  type As = "TOKEN" | "ADMIN_TOKEN";
  const auth = (as?: As) => (as ? `${authFlag(as)} ` : "");
  const grpcurl = (method: string, body?: object, as?: As) =>
    `  ${grpcurlCommand()} ${ca} ${auth(as)}${body ? `-d ${shellJson(body)} ` : ""}${front} ${method}`;
  // A query string is quoted: `?` is a glob character to the shell.
  const url = (urlPath: string) =>
    urlPath.includes("?") ? `'https://${front}${urlPath}'` : `https://${front}${urlPath}`;
  const curl = (urlPath: string, as?: As) =>
    `  curl -s --cacert ${certFile(dir, "ca.crt")} ${auth(as)}${url(urlPath)}`;
  const post = (urlPath: string, body: object, as: As) =>
    `  curl -s --cacert ${certFile(dir, "ca.crt")} ${auth(as)}-X POST ${url(urlPath)} -H 'content-type: application/json' -d ${shellJson(body)}`;
  const counts = new Set(registry.names.map((name) => plan.addresses[name].length));
  const width = Math.max(8, ...registry.names.map((name) => name.length + 1));
  const [firstUser] = plan.addresses.user;
  const lines = [
    "",
    `${READY}: Envoy in front of ${counts.size === 1 ? [...counts][0] : "the"} replicas of each service${onPostgres(plan) ? ", on PostgreSQL" : ""}`,
    `  ${"envoy".padEnd(width)} ${front}   gRPC, gRPC-Web, Connect and REST over TLS; admin http://${HOST}:${envoy.adminPort}`,
    ...registry.services.map(
      (service) =>
        `  ${service.name.padEnd(width)} ${plan.addresses[service.name].join(" ")}   ${service.protoServices.join(" ")}`,
    ),
    `${storageLine(plan, server)} (access.log: one JSON line per request)`,
    "",
    "Metrics (Prometheus text, GET /metrics):",
    `  ${"replicas".padEnd(width)} ${observed.metrics.join(" ")}`,
    ...(envoy.statsPort
      ? [`  ${"envoy".padEnd(width)} http://${HOST}:${envoy.statsPort}/metrics`]
      : []),
    observed.prometheus
      ? `  ${"prometheus".padEnd(width)} ${observed.prometheus}   (rules and alerts: ${observed.prometheus}/alerts)`
      : "  npm run mesh -- --observe also starts Prometheus, scraping all of them.",
    "",
    `TLS at the edge and mutual TLS inside, with the development CA in ${certFile(dir, "")}.`,
    ...tokens,
    "",
    "Try it through Envoy (reflection lists the public API, no proto files needed):",
    grpcurl("list"),
  ];
  const [productId] = demo.productIds;
  if (demo.userId) {
    lines.push(
      grpcurl("shop.user.v1.UserService/GetUser", { user_id: demo.userId }, "TOKEN"),
      curl(`/users/${demo.userId}`, "TOKEN"),
    );
  } else {
    lines.push(post("/users", { email: "you@example.com", display_name: "You" }, "ADMIN_TOKEN"));
  }
  lines.push(productId ? curl(`/products/${productId}`) : curl("/products?page_size=10"));
  if (demo.userId && productId) {
    lines.push(
      post(
        "/orders",
        {
          user_id: demo.userId,
          lines: [{ product_id: productId, quantity: 1 }],
          request_id: "demo-mesh-order-1",
        },
        "TOKEN",
      ),
      curl(`/orders?user_id=${demo.userId}`, "TOKEN"),
    );
  }
  lines.push(
    "A replica directly, as an operator (mutual TLS with the cli identity):",
    `  ${grpcurlCommand()} ${ca} -cert ${certFile(dir, "cli.crt")} -key ${certFile(dir, "cli.key")} ${firstUser} list`,
    "Which replica served what (Envoy's per-host counters):",
    `  curl -s ${HOST}:${envoy.adminPort}/clusters | grep rq_total`,
    "",
    MESH_BANNER_END,
    "",
  );
  return lines.join("\n");
}

supervisor.handleSignals();

try {
  refuseDeploymentSettings(process.env);
  const started = Date.now();
  let plan = meshPlan();
  let server: LocalPostgres | undefined;
  if (postgres) {
    // The data directory is this launch's before its server starts in it.
    supervisor.lockDataDir(plan.dataDir);
    const local = await launchPostgres(supervisor, plan.dataDir);
    server = local.server;
    plan = meshPlan({ ...process.env, SHOP_DATABASE_URL: local.url });
  }
  console.log(
    `starting ${plan.replicas.length} replicas and Envoy; logs in ${shortPath(plan.logDir)}`,
  );
  const launched = await supervisor.launch(plan, {
    started,
    portHint: "is another npm run mesh or npm start running?",
    ...(observe && {
      prometheus: {
        port: env.int("SHOP_PROMETHEUS_PORT", PROMETHEUS_PORT),
        scrapeInterval: env.string("SHOP_PROMETHEUS_SCRAPE_INTERVAL", "5s"),
      },
    }),
  });
  const access = await launchAccess(plan);
  const demo = await seedDemo(
    { user: plan.addresses.user.join(","), product: plan.addresses.product.join(",") },
    seed,
    access,
  );
  console.log(
    banner(
      plan,
      plan.envoy as NonNullable<FleetPlan["envoy"]>,
      demo,
      await tokenLines(access.token, demo.userId),
      {
        metrics: launched.replicas.flatMap((proc) =>
          proc.metricsAddress ? [`http://${proc.metricsAddress}/metrics`] : [],
        ),
        ...(launched.prometheus && { prometheus: launched.prometheus.url }),
      },
      server,
    ),
  );
} catch (error) {
  console.error(error instanceof LaunchError ? error.message : error);
  await supervisor.stopAll(1);
}
