// npm run mesh: the production shape on this machine. Envoy on 127.0.0.1:8080 in front of two
// replicas of each service (replica i on base port + 10 × i); the order replicas call user and
// product directly, round_robin over their replicas; the replicas of a service share one SQLite
// file under data/mesh. Demo data on the first run (--no-seed or SHOP_SEED=false to skip), one
// ready banner, and Ctrl-C stops everything. See deploy/README.md.
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { envoyYaml } from "../deploy/envoy/config.js";
import { env } from "../kit/config.js";
import { spawnEnvoy } from "./lib/envoy.js";
import {
  assertPortsFree,
  LaunchError,
  SERVICE_KINDS,
  SERVICES,
  type ServiceKind,
} from "./lib/launcher.js";
import { MESH_HOST, type MeshPlan, meshPlan } from "./lib/mesh.js";
import { migrateDatabase } from "./lib/migrate.js";
import { type DemoData, seedDemo } from "./lib/seed.js";
import { grpcurlCommand, Supervisor, shellJson } from "./lib/supervisor.js";

const seed = !process.argv.includes("--no-seed") && env.bool("SHOP_SEED", true);
const supervisor = new Supervisor();

/** A path relative to the working directory when it lies below it. */
function shortPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative && !relative.startsWith("..") ? relative : file;
}

function banner(plan: MeshPlan, demo: DemoData): string {
  const front = `${MESH_HOST}:${plan.envoy.port}`;
  const grpcurl = (method: string, body?: object) =>
    `  ${grpcurlCommand()} -plaintext ${body ? `-d ${shellJson(body)} ` : ""}${front} ${method}`;
  // A query string is quoted: `?` is a glob character to the shell.
  const curl = (urlPath: string) =>
    `  curl -s ${urlPath.includes("?") ? `'${front}${urlPath}'` : `${front}${urlPath}`}`;
  const post = (urlPath: string, body: object) =>
    `  curl -s -X POST ${front}${urlPath} -H 'content-type: application/json' -d ${shellJson(body)}`;
  const replicas = (service: ServiceKind) => plan.replicas.filter((r) => r.service === service);
  const counts = new Set(SERVICE_KINDS.map((service) => replicas(service).length));
  const lines = [
    "",
    `shopmesh is ready: Envoy in front of ${counts.size === 1 ? [...counts][0] : "the"} replicas of each service`,
    `  envoy    ${front}   gRPC, gRPC-Web and REST; admin http://${MESH_HOST}:${plan.envoy.adminPort}`,
    ...SERVICE_KINDS.map(
      (service) =>
        `  ${service.padEnd(8)} ${plan.addresses[service].join(" ")}   ${SERVICES[service]}`,
    ),
    `  data ${shortPath(plan.dataDir)}, logs ${shortPath(plan.logDir)} (access.log: one JSON line per request)`,
    "",
    "Try it through Envoy (reflection is on, no proto files needed):",
    grpcurl("list"),
  ];
  const [productId] = demo.productIds;
  if (demo.userId) {
    lines.push(
      grpcurl(`${SERVICES.user}/GetUser`, { user_id: demo.userId }),
      curl(`/users/${demo.userId}`),
    );
  } else {
    lines.push(post("/users", { email: "you@example.com", display_name: "You" }));
  }
  lines.push(productId ? curl(`/products/${productId}`) : curl("/products?page_size=10"));
  if (demo.userId && productId) {
    lines.push(
      post("/orders", {
        user_id: demo.userId,
        lines: [{ product_id: productId, quantity: 1 }],
        request_id: "demo-mesh-order-1",
      }),
      curl(`/orders?user_id=${demo.userId}`),
    );
  }
  lines.push(
    "Which replica served what (Envoy's per-host counters):",
    `  curl -s ${MESH_HOST}:${plan.envoy.adminPort}/clusters | grep rq_total`,
    "",
    "Ctrl-C stops everything.",
    "",
  );
  return lines.join("\n");
}

supervisor.handleSignals();

try {
  const started = Date.now();
  const plan = meshPlan();
  const ports: Record<string, number> = {
    envoy: plan.envoy.port,
    "envoy admin": plan.envoy.adminPort,
  };
  for (const replica of plan.replicas) ports[replica.name] = replica.port;
  await assertPortsFree(MESH_HOST, ports, "is another mesh or `npm start` running?");

  mkdirSync(plan.logDir, { recursive: true });
  // Replicas share a file, so each database is migrated once, before any replica opens it.
  await Promise.all(
    SERVICE_KINDS.map((service) => migrateDatabase(service, plan.databases[service])),
  );
  writeFileSync(
    plan.envoy.configFile,
    envoyYaml(
      plan.envoy.topology,
      undefined,
      "# Written by scripts/mesh.ts (npm run mesh) from deploy/envoy/config.ts; do not edit.\n",
    ),
  );

  console.log(
    `starting ${plan.replicas.length} replicas and Envoy; logs in ${shortPath(plan.logDir)}`,
  );
  // Envoy starts with the replicas; it health-checks them in as they come up.
  const envoy = supervisor.add(spawnEnvoy({ config: plan.envoy.configFile, logDir: plan.logDir }));
  supervisor.onUnexpectedExit(envoy, (how) => {
    console.error(`\nenvoy exited unexpectedly (${how}); see ${envoy.logFile}`);
    void supervisor.stopAll(1);
  });
  const alive = new Map(SERVICE_KINDS.map((service) => [service, 0]));
  await supervisor.startServices(plan.replicas, plan.logDir, {
    started,
    onServing: (proc) => {
      const service = proc.spec.service;
      alive.set(service, (alive.get(service) ?? 0) + 1);
      supervisor.onUnexpectedExit(proc, (how) => {
        const left = (alive.get(service) ?? 1) - 1;
        alive.set(service, left);
        console.error(`\n${proc.spec.name} exited unexpectedly (${how}); see ${proc.logFile}`);
        if (left > 0) {
          console.error(
            `Envoy and the order replicas route ${service} calls to the other replicas.`,
          );
        } else {
          console.error(`no ${service} replica is left; stopping.`);
          void supervisor.stopAll(1);
        }
      });
    },
  });
  const demo = await seedDemo(
    plan.addresses.user.join(","),
    plan.addresses.product.join(","),
    seed,
  );
  await envoy.waitReady();
  console.log(
    `  ${"envoy".padEnd(10)} ${MESH_HOST}:${plan.envoy.port} all replicas healthy (${Date.now() - started} ms)`,
  );
  console.log(banner(plan, demo));
} catch (error) {
  console.error(error instanceof LaunchError ? error.message : error);
  await supervisor.stopAll(1);
}
