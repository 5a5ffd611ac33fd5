// The processes a bench run measures: the echo servers and fleets of the services, started
// through the same supervisor as `npm start`, each fleet seeded with a shopper and a catalogue.
import path from "node:path";
import { DEV_CERTS_DIR } from "../../kit/security/security.js";
import { launchAccess } from "../../scripts/lib/banner.js";
import { signToken } from "../../scripts/lib/credentials.js";
import { type Checkout, forkLogged, repoRoot, THIS_CHECKOUT } from "../../scripts/lib/launcher.js";
import type { FleetPlan } from "../../scripts/lib/plan.js";
import { fleetPlan } from "../../scripts/lib/plan.js";
import { freePorts } from "../../scripts/lib/ports.js";
import { launchPostgres } from "../../scripts/lib/postgres.js";
import { seedBench } from "../../scripts/lib/seed.js";
import { type LaunchOptions, Supervisor } from "../../scripts/lib/supervisor.js";
import { registry, type ServiceName } from "../../services/registry.js";
import type { BenchOptions } from "./options.js";
import type { Fleet, ProcessName, Storage, TargetContext } from "./targets.js";

/**
 * What starting the processes depends on, of a bench run's options; `heapProfDir` is --profile's
 * (bench/heap-prof.mjs).
 */
export type FleetOptions = Pick<
  BenchOptions,
  "gc" | "cpuProfDir" | "runtime" | "envoyConcurrency"
> & {
  heapProfDir?: string;
};

/**
 * A build to start: a checkout, with the writer of its own Envoy config (this checkout's when
 * absent).
 */
export type Build = Checkout & Pick<LaunchOptions, "envoyYaml">;

/** What launch() started: the address and pid of each process, and the plan of each fleet. */
export interface Launched {
  addresses: Partial<Record<ProcessName, string>>;
  pids: Map<ProcessName, number>;
  plans: Partial<Record<Fleet, FleetPlan>>;
}

/** Where the processes keep their garbage collection totals (bench/gc-stats.mjs), under --gc. */
export const gcDirOf = (options: FleetOptions, dir: string) =>
  options.gc ? path.join(dir, "gc") : undefined;

/**
 * Settings for every process the bench starts: the preloads of the CPU profiler, the heap
 * profiler and the garbage collection totals, when asked. Node refuses --cpu-prof in
 * NODE_OPTIONS, so the profiler's preload does the same through the inspector.
 */
export function instrumentEnv(options: FleetOptions, dir: string): Record<string, string> {
  const { cpuProfDir, heapProfDir } = options;
  const gcDir = gcDirOf(options, dir);
  const preloads = [
    ...(cpuProfDir ? ["cpu-prof.mjs"] : []),
    ...(heapProfDir ? ["heap-prof.mjs"] : []),
    ...(gcDir ? ["gc-stats.mjs"] : []),
  ].map((file) => `--import ${path.join(repoRoot, "bench", file)}`);
  if (preloads.length === 0) return {};
  const existing = process.env.NODE_OPTIONS ?? "";
  return {
    NODE_OPTIONS: [existing, ...preloads].join(" ").trim(),
    ...(cpuProfDir && { BENCH_CPU_PROF_DIR: cpuProfDir }),
    ...(heapProfDir && { BENCH_HEAP_PROF_DIR: heapProfDir }),
    ...(gcDir && { BENCH_GC_DIR: gcDir }),
  };
}

/**
 * One replica of every registered service on `storage`, with its own data directory and its own
 * supervisor (stopped after `supervisor`'s processes): SQLite through the sqlite3 driver, or
 * PostgreSQL on a local server started for the run. Its processes are `<service>@<storage>`.
 */
async function launchOn(
  storage: Storage,
  supervisor: Supervisor,
  dir: string,
  options: FleetOptions,
  addresses: Partial<Record<ProcessName, string>>,
  pids: Map<ProcessName, number>,
  checkout: Checkout,
): Promise<FleetPlan> {
  const own = new Supervisor();
  supervisor.afterStop(() => own.stop());
  const dataDir = path.join(dir, `data-${storage}`);
  own.lockDataDir(dataDir);
  const env = { ...instrumentEnv(options, dir) };
  let databases: Record<string, string> | undefined;
  if (storage === "sqlite3") env.SHOP_SQLITE_DRIVER = "sqlite3";
  else {
    // PostgreSQL's defaults: a commit waits for its WAL to reach the disk, as a write on SQLite
    // does before it answers (SHOP_SQLITE_SYNC).
    const { server, url } = await launchPostgres(own, dataDir);
    databases = Object.fromEntries(registry.names.map((name) => [name, url]));
    const pid = server.pid();
    if (pid) pids.set("postgres", pid);
  }
  const ports = await freePorts(registry.names.length);
  const plan = fleetPlan({
    dataDir,
    ports: Object.fromEntries(
      registry.names.map((name, i) => [name, [ports[i] as number]]),
    ) as Record<ServiceName, number[]>,
    ...(databases && { databases }),
  });
  const launched = await own.launch(plan, {
    portHint: "a port the bench picked was taken meanwhile; run it again",
    quiet: true,
    env,
    runtime: options.runtime,
    checkout,
  });
  for (const replica of launched.replicas) {
    const name = `${replica.spec.service}@${storage}` as ProcessName;
    addresses[name] = replica.address;
    pids.set(name, replica.child.pid as number);
  }
  return plan;
}

/**
 * Starts what the targets need, through the same supervisor as `npm start` and `npm run mesh`:
 * the echo servers, one replica of every registered service with Envoy in front for each profile
 * a target calls, and a fleet per other storage a target names. Returns the address and pid of
 * each process, and the plan of each fleet.
 */
export async function launch(
  supervisor: Supervisor,
  needs: Set<ProcessName>,
  storages: Set<Storage>,
  dir: string,
  options: FleetOptions,
  checkout: Build = THIS_CHECKOUT,
): Promise<Launched> {
  const addresses: Partial<Record<ProcessName, string>> = {};
  const pids = new Map<ProcessName, number>();
  const logDir = path.join(dir, "logs");
  const env = { ...process.env, ...instrumentEnv(options, dir) };
  const echoes = (["echo", "kit-echo"] as const)
    .filter((name) => needs.has(name))
    .map(async (name) => {
      const script = path.join(
        checkout.root,
        "bench",
        "echo",
        `${name === "echo" ? "" : "kit-"}server.ts`,
      );
      const proc = forkLogged(name, script, [], logDir, env, "tsx", checkout);
      addresses[name] = await supervisor.startReporting(proc);
      pids.set(name, proc.child.pid as number);
    });
  // The plaintext development profile, and the production shape (`tls-` names): mutual TLS with
  // the development credentials, TLS at the edge.
  const startFleet = async (fleet: "plaintext" | "tls") => {
    const name = (service: ServiceName | "envoy") =>
      (fleet === "tls" ? `tls-${service}` : service) as ProcessName;
    if (!registry.names.some((service) => needs.has(name(service)))) return;
    const envoy = needs.has(name("envoy"));
    const ports = await freePorts(registry.names.length + (envoy ? 2 : 0));
    const plan = fleetPlan({
      dataDir: path.join(dir, fleet),
      ports: Object.fromEntries(
        registry.names.map((service, i) => [service, [ports[i] as number]]),
      ) as Record<ServiceName, number[]>,
      ...(envoy && {
        envoy: {
          port: ports.at(-2) as number,
          adminPort: ports.at(-1) as number,
          // The production shape limits each caller at the edge: on, so its cost is measured,
          // and far above the bench's load, so that it refuses nothing.
          ...(fleet === "tls" && { rateLimit: { calls: 1_000_000, seconds: 1 } }),
        },
      }),
      ...(fleet === "tls" && { tls: DEV_CERTS_DIR }),
    });
    const launched = await supervisor.launch(plan, {
      portHint: "a port the bench picked was taken meanwhile; run it again",
      quiet: true,
      env: instrumentEnv(options, dir),
      envoyConcurrency: options.envoyConcurrency,
      runtime: options.runtime,
      checkout,
      envoyYaml: checkout.envoyYaml,
    });
    for (const replica of launched.replicas) {
      addresses[name(replica.spec.service)] = replica.address;
      pids.set(name(replica.spec.service), replica.child.pid as number);
    }
    if (launched.envoy && plan.envoy) {
      addresses[name("envoy")] = `127.0.0.1:${plan.envoy.port}`;
      pids.set(name("envoy"), launched.envoy.child.pid as number);
    }
    plans[fleet] = plan;
  };
  const plans: Partial<Record<Fleet, FleetPlan>> = {};
  // One fleet after the other: starting six Node processes at once on a small machine is slow.
  const fleets = (async () => {
    await startFleet("plaintext");
    await startFleet("tls");
    for (const storage of storages) {
      plans[storage] = await launchOn(storage, supervisor, dir, options, addresses, pids, checkout);
    }
  })();
  await Promise.all([...echoes, fleets]);
  return { addresses, pids, plans };
}

/** Each fleet gets its own shopper and catalogue, seeded by an admin as npm start does. */
export async function seedFleets(plans: Launched["plans"]): Promise<TargetContext["fleets"]> {
  const fleets: TargetContext["fleets"] = {};
  for (const [fleet, plan] of Object.entries(plans) as [Fleet, FleetPlan][]) {
    const seeded = await seedBench(
      { user: plan.addresses.user.join(","), product: plan.addresses.product.join(",") },
      await launchAccess(plan),
    );
    fleets[fleet] = {
      ...seeded,
      token: await signToken({ user: seeded.userId, ttlSeconds: 86_400 }),
    };
  }
  return fleets;
}
