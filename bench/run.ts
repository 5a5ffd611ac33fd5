// npm run bench: start the mesh and a bare echo server, load each target with ghz at fixed
// concurrency levels, and write bench/results/<date>.{md,json,svg}. See bench/README.md.

import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { DEV_CERTS_DIR } from "../kit/security.js";
import { launchAccess } from "../scripts/lib/banner.js";
import { signToken } from "../scripts/lib/credentials.js";
import { forkLogged, freePorts, repoRoot, tool } from "../scripts/lib/launcher.js";
import type { FleetPlan } from "../scripts/lib/plan.js";
import { fleetPlan } from "../scripts/lib/plan.js";
import { launchPostgres, postgresBinDir } from "../scripts/lib/postgres.js";
import { seedBench } from "../scripts/lib/seed.js";
import { Supervisor } from "../scripts/lib/supervisor.js";
import { registry, type ServiceName } from "../services/registry.js";
import { buildDist } from "./lib/build.js";
import { chartSvg } from "./lib/chart.js";
import { gcDelta, readGcTotals } from "./lib/gc.js";
import { runLoad } from "./lib/ghz.js";
import { type BenchOptions, parseOptions, USAGE } from "./lib/options.js";
import {
  cpuDelta,
  machineSeconds,
  type ProcSample,
  resetPeak,
  sampleMachine,
  sampleProcess,
  sampleTree,
} from "./lib/proc.js";
import { markdownReport } from "./lib/report.js";
import { reportName } from "./lib/report-name.js";
import {
  type BenchResults,
  goals,
  type ProcessUsage,
  type RunResult,
  ratios,
} from "./lib/results.js";
import { type SoakResult, soak } from "./lib/soak.js";
import { measureStartup, type StartupResult } from "./lib/startup.js";
import {
  type Fleet,
  type ProcessName,
  type Storage,
  TARGETS,
  type Target,
  type TargetContext,
  targetById,
} from "./lib/targets.js";

const log = (message: string) => console.log(`bench: ${message}`);

function version(command: string, args: string[], pattern: RegExp): string {
  // Some tools print their version on stderr.
  const { stdout, stderr } = spawnSync(command, args, { encoding: "utf8" });
  const out = `${stdout ?? ""}${stderr ?? ""}`;
  return pattern.exec(out)?.[1] ?? (out.trim() || "unknown");
}

/** Where the processes keep their garbage collection totals (bench/gc-stats.mjs), under --gc. */
const gcDirOf = (options: BenchOptions, dir: string) =>
  options.gc ? path.join(dir, "gc") : undefined;

/**
 * Settings for every process the bench starts: the preloads of the CPU profiler and of the
 * garbage collection totals, when asked. Node refuses --cpu-prof in NODE_OPTIONS, so the
 * profiler's preload does the same through the inspector.
 */
function instrumentEnv(options: BenchOptions, dir: string): Record<string, string> {
  const { cpuProfDir } = options;
  const gcDir = gcDirOf(options, dir);
  const preloads = [
    ...(cpuProfDir ? ["cpu-prof.mjs"] : []),
    ...(gcDir ? ["gc-stats.mjs"] : []),
  ].map((file) => `--import ${path.join(repoRoot, "bench", file)}`);
  if (preloads.length === 0) return {};
  const existing = process.env.NODE_OPTIONS ?? "";
  return {
    NODE_OPTIONS: [existing, ...preloads].join(" ").trim(),
    ...(cpuProfDir && { BENCH_CPU_PROF_DIR: cpuProfDir }),
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
  options: BenchOptions,
  addresses: Partial<Record<ProcessName, string>>,
  pids: Map<ProcessName, number>,
): Promise<FleetPlan> {
  const own = new Supervisor();
  supervisor.afterStop(() => own.stop());
  const dataDir = path.join(dir, `data-${storage}`);
  own.lockDataDir(dataDir);
  const env = { ...instrumentEnv(options, dir) };
  let databases: Record<string, string> | undefined;
  if (storage === "sqlite3") env.SHOP_SQLITE_DRIVER = "sqlite3";
  else {
    // Commits do not wait for their WAL to reach the disk: SQLite's synchronous=NORMAL in WAL
    // mode, which the services use, makes the same trade.
    const { server, url } = await launchPostgres(own, dataDir, {
      settings: { synchronous_commit: "off" },
    });
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
async function launch(
  supervisor: Supervisor,
  needs: Set<ProcessName>,
  storages: Set<Storage>,
  dir: string,
  options: BenchOptions,
): Promise<{
  addresses: Partial<Record<ProcessName, string>>;
  pids: Map<ProcessName, number>;
  plans: Partial<Record<Fleet, FleetPlan>>;
}> {
  const addresses: Partial<Record<ProcessName, string>> = {};
  const pids = new Map<ProcessName, number>();
  const logDir = path.join(dir, "logs");
  const env = { ...process.env, ...instrumentEnv(options, dir) };
  const echoes = (["echo", "kit-echo"] as const)
    .filter((name) => needs.has(name))
    .map(async (name) => {
      const script = path.join(
        repoRoot,
        "bench",
        "echo",
        `${name === "echo" ? "" : "kit-"}server.ts`,
      );
      const proc = forkLogged(name, script, [], logDir, env);
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
        envoy: { port: ports.at(-2) as number, adminPort: ports.at(-1) as number },
      }),
      ...(fleet === "tls" && { tls: DEV_CERTS_DIR }),
    });
    const launched = await supervisor.launch(plan, {
      portHint: "a port the bench picked was taken meanwhile; run it again",
      quiet: true,
      env: instrumentEnv(options, dir),
      envoyConcurrency: options.envoyConcurrency,
      runtime: options.runtime,
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
      plans[storage] = await launchOn(storage, supervisor, dir, options, addresses, pids);
    }
  })();
  await Promise.all([...echoes, fleets]);
  return { addresses, pids, plans };
}

function snapshot(pids: Map<ProcessName, number>): Map<ProcessName, ProcSample | undefined> {
  // PostgreSQL works in a process per connection: the server's CPU is its children's too.
  return new Map(
    [...pids].map(([name, pid]) => [
      name,
      name === "postgres" ? sampleTree(pid) : sampleProcess(pid),
    ]),
  );
}

async function measure(
  target: Target,
  context: TargetContext,
  concurrency: number,
  durationS: number,
  pids: Map<ProcessName, number>,
  options: BenchOptions,
  scratch: string,
  gcDir: string | undefined,
): Promise<RunResult> {
  for (const pid of pids.values()) resetPeak(pid);
  const gcOf = (pid: number) => (gcDir ? readGcTotals(gcDir, pid) : undefined);
  const gcBefore = new Map([...pids.values()].map((pid) => [pid, gcOf(pid)]));
  const before = snapshot(pids);
  const machineBefore = sampleMachine();
  const harnessBefore = process.cpuUsage();
  const load = await runLoad(target.call(context), {
    ghz: tool("ghz"),
    address: context.addresses[target.entry] as string,
    concurrency,
    durationS,
    outFile: path.join(scratch, "ghz.json"),
    cpus: options.ghzCpus,
  });
  const harness = process.cpuUsage(harnessBefore);
  const machine = machineSeconds(machineBefore, sampleMachine());
  const after = snapshot(pids);

  const processes: Partial<Record<ProcessName, ProcessUsage>> = {};
  for (const [name, end] of after) {
    const start = before.get(name);
    if (!start || !end) continue;
    const cpuS = cpuDelta(start, end);
    const pid = pids.get(name) as number;
    const [gcStart, gcEnd] = [gcBefore.get(pid), gcOf(pid)];
    processes[name] = {
      cpuS,
      cpuPct: (100 * cpuS) / load.elapsedS,
      peakRssMb: end.peakRssKb / 1024,
      ...(gcStart && gcEnd && { gc: gcDelta(gcStart, gcEnd) }),
    };
  }
  const ours = Object.values(processes).reduce((sum, usage) => sum + usage.cpuS, 0);
  const harnessCpuS = (harness.user + harness.system) / 1e6;
  const { ghzCpuS, ...rest } = load;
  return {
    target: target.id,
    label: target.label,
    concurrency,
    ...rest,
    processes,
    other: {
      ghzCpuS,
      harnessCpuS,
      unrelatedCpuS: Math.max(0, machine.busyS - machine.stealS - ours - ghzCpuS - harnessCpuS),
      stealS: machine.stealS,
      machineBusyPct: (100 * machine.busyS) / (load.elapsedS * os.cpus().length),
    },
  };
}

async function main(): Promise<number> {
  let options: BenchOptions | undefined;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    console.error(`bench: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  if (!options) {
    console.log(USAGE);
    return 0;
  }
  const started = new Date();
  const loadBefore = os.loadavg()[0] ?? 0;
  const targets = options.targets.map(targetById);
  const storages = new Set(targets.flatMap((target) => target.storage ?? []));
  const soakTarget = options.soakCalls > 0 ? targetById(options.soakTarget) : undefined;
  const needs = new Set(
    [...targets.filter((t) => !t.storage), ...(soakTarget ? [soakTarget] : [])].flatMap(
      (target) => target.path,
    ),
  );
  for (const name of ["ghz", ...(needs.has("envoy") || needs.has("tls-envoy") ? ["envoy"] : [])]) {
    if (!existsSync(tool(name))) {
      console.error(`bench: ${tool(name)} is missing; run \`npm run tools\``);
      return 1;
    }
  }

  // The services run as the production image runs them: compiled JavaScript (--runtime tsx for
  // the sources as `npm start` runs them). The compiled starts below need the build too.
  let built = false;
  if (options.runtime === "compiled" || options.startupRuns > 0) {
    log("building dist/ (npm run build)");
    try {
      buildDist();
    } catch (error) {
      console.error(`bench: ${(error as Error).message}`);
      return 1;
    }
    built = true;
  }

  const dir = await mkdtemp(path.join(os.tmpdir(), "shopmesh-bench-"));
  // A PostgreSQL server the run starts keeps its cluster in here, as the postgres user when
  // the bench runs as root: that user must be let through.
  if (storages.has("postgres")) await chmod(dir, 0o711);
  if (options.cpuProfDir) await mkdir(options.cpuProfDir, { recursive: true });
  const gcDir = gcDirOf(options, dir);
  if (gcDir) await mkdir(gcDir);
  const supervisor = new Supervisor();
  const interrupted = async () => {
    console.error("\nbench: interrupted; stopping");
    await supervisor.stop();
    if (!options.keep) await rm(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);

  try {
    const others = [...storages].map((storage) => `every service on ${storage}`);
    log(`starting ${[...needs, ...others].join(", ")} (data in ${dir})`);
    const { addresses, pids, plans } = await launch(supervisor, needs, storages, dir, options);
    for (const envoy of ["envoy", "tls-envoy"] as const) {
      if (addresses[envoy]) {
        log(`${envoy} on ${addresses[envoy]} (--concurrency ${options.envoyConcurrency})`);
      }
    }
    // Each fleet gets its own shopper and catalogue, seeded by an admin as npm start does.
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
    const context: TargetContext = { addresses, fleets, certs: DEV_CERTS_DIR };
    const top = Math.max(...options.concurrency);
    const runs: RunResult[] = [];
    for (const target of targets) {
      if (options.warmupS > 0) {
        await runLoad(target.call(context), {
          ghz: tool("ghz"),
          address: context.addresses[target.entry] as string,
          concurrency: top,
          durationS: options.warmupS,
          outFile: path.join(dir, "warmup.json"),
          cpus: options.ghzCpus,
        });
      }
      for (const concurrency of options.concurrency) {
        const run = await measure(
          target,
          context,
          concurrency,
          options.durationS,
          pids,
          options,
          dir,
          gcDir,
        );
        runs.push(run);
        log(
          `${target.id.padEnd(14)} c=${String(concurrency).padEnd(3)} ${run.rps.toFixed(0).padStart(6)} req/s  p50 ${run.latencyMs.p50.toFixed(2)} ms  p99 ${run.latencyMs.p99.toFixed(2)} ms  errors ${run.errors}`,
        );
      }
    }
    let soakResult: SoakResult | undefined;
    if (soakTarget) {
      log(`soak: ${options.soakCalls} calls of ${soakTarget.id}, twice`);
      soakResult = await soak(soakTarget, context, pids, {
        calls: options.soakCalls,
        concurrency: 16,
        ghz: tool("ghz"),
        outFile: path.join(dir, "soak.json"),
        cpus: options.ghzCpus,
      });
      for (const [name, rss] of Object.entries(soakResult.rssMb)) {
        log(`soak: ${name} RSS ${rss.first.toFixed(0)} MiB, then ${rss.second.toFixed(0)} MiB`);
      }
    }
    await supervisor.stop();

    // Starts of each service on its own, with nothing else of the bench running.
    let startup: StartupResult[] = [];
    if (options.startupRuns > 0 && built) {
      startup = await measureStartup({ starts: options.startupRuns, idleS: options.idleS });
      for (const result of startup) {
        log(
          `start ${result.runtime.padEnd(8)} ${result.service.padEnd(8)} SERVING in ${result.servingMs.median.toFixed(0)} ms (max ${result.servingMs.max.toFixed(0)})  idle RSS ${result.idleRssMb.toFixed(1)} MB (anonymous ${result.idleAnonMb.toFixed(1)})`,
        );
      }
    }

    const ratioList = ratios(runs, options.concurrency);
    const results: BenchResults = {
      version: 1,
      date: started.toISOString(),
      mode: options.mode,
      machine: {
        cores: os.cpus().length,
        cpuModel: os.cpus()[0]?.model.trim() ?? "unknown",
        memoryGb: os.totalmem() / 2 ** 30,
        kernel: os.release(),
        node: process.version,
        ghz: version(tool("ghz"), ["--version"], /(v?[\d.]+)/),
        envoy:
          needs.has("envoy") || needs.has("tls-envoy")
            ? version(tool("envoy"), ["--version"], /\/(\d+\.\d+\.\d+)\//)
            : "not run",
        postgres: storages.has("postgres")
          ? version(path.join(postgresBinDir(), "postgres"), ["--version"], /(\d+\.\d+)/)
          : "not run",
        loadAverage: { before: loadBefore, after: os.loadavg()[0] ?? 0 },
      },
      settings: {
        durationS: options.durationS,
        warmupS: options.warmupS,
        concurrency: options.concurrency,
        targets: options.targets,
        envoyConcurrency: options.envoyConcurrency,
        ghzCpus: options.ghzCpus,
        logLevel: process.env.SHOP_LOG_LEVEL || "info",
        cpuProfile: options.cpuProfDir !== undefined,
        gc: options.gc,
        runtime: options.runtime,
        startupRuns: options.startupRuns,
        idleS: options.idleS,
      },
      runs,
      startup,
      ratios: ratioList,
      ...(soakResult && { soak: soakResult }),
      goals: goals(runs, {
        paths: new Map(TARGETS.map((target) => [target.id, target.path])),
        startup,
        soak: soakResult,
      }),
      wallS: (Date.now() - started.getTime()) / 1000,
    };

    await mkdir(options.outDir, { recursive: true });
    const name = reportName(options.outDir, started);
    const subtitle = `${results.date.slice(0, 16)} · ${results.machine.cores} cores · ${options.durationS} s per bar`;
    // Three decimals are plenty for every number here (ms, s, MiB, ratios).
    const rounded = (_key: string, value: unknown) =>
      typeof value === "number" && !Number.isInteger(value) ? Math.round(value * 1e3) / 1e3 : value;
    await writeFile(
      path.join(options.outDir, `${name}.json`),
      `${JSON.stringify(results, rounded, 2)}\n`,
    );
    await writeFile(
      path.join(options.outDir, `${name}.svg`),
      chartSvg(runs, targets, options.concurrency, subtitle),
    );
    await writeFile(
      path.join(options.outDir, `${name}.md`),
      markdownReport(results, `${name}.svg`),
    );
    for (const ratio of ratioList) {
      log(`ratio ${ratio.name} c=${ratio.concurrency}: ${ratio.value.toFixed(2)}`);
    }
    log(`wrote ${path.join(options.outDir, name)}.{md,json,svg} in ${results.wallS.toFixed(0)} s`);
    return runs.some((run) => run.ok === 0) ? 1 : 0;
  } catch (error) {
    console.error(`bench: ${(error as Error).stack ?? error}`);
    return 1;
  } finally {
    await supervisor.stop();
    if (options.keep) log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

// `--observability`: the price of metrics and tracing, measured on its own (bench/observability.ts).
// `--latency`: where a CreateOrder's time goes, from its traces (bench/latency.ts).
if (process.argv.includes("--observability")) await import("./observability.js");
else if (process.argv.includes("--latency")) await import("./latency.js");
else process.exitCode = await main();
