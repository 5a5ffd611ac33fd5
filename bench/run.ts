// npm run bench: start the mesh and a bare echo server, load each target with ghz at fixed
// concurrency levels, and write bench/results/<date>.{md,json,svg}. See bench/README.md.
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { createInterface } from "node:readline";
import { ProductServiceService } from "../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../gen/ts/shop/user/v1/user.js";
import { createClient } from "../kit/client.js";
import { type EnvoyProcess, frontDoorConfig, spawnEnvoy } from "../scripts/lib/envoy.js";
import {
  freePorts,
  type RunningProcess,
  repoRoot,
  type ServiceKind,
  spawnService,
  stopProcess,
  tool,
  waitServing,
} from "../scripts/lib/launcher.js";
import { chartSvg } from "./lib/chart.js";
import { runLoad } from "./lib/ghz.js";
import { type BenchOptions, parseOptions, USAGE } from "./lib/options.js";
import {
  machineBusySeconds,
  type ProcSample,
  resetPeak,
  sampleMachine,
  sampleProcess,
} from "./lib/proc.js";
import { markdownReport } from "./lib/report.js";
import {
  type BenchResults,
  goals,
  type ProcessUsage,
  type RunResult,
  ratios,
} from "./lib/results.js";
import { type ProcessName, type Target, type TargetContext, targetById } from "./lib/targets.js";

const log = (message: string) => console.log(`bench: ${message}`);

function version(command: string, args: string[], pattern: RegExp): string {
  // Some tools print their version on stderr.
  const { stdout, stderr } = spawnSync(command, args, { encoding: "utf8" });
  const out = `${stdout ?? ""}${stderr ?? ""}`;
  return pattern.exec(out)?.[1] ?? (out.trim() || "unknown");
}

/** Everything the run started, so a failure or Ctrl-C stops it all. */
class Fleet {
  readonly pids = new Map<ProcessName, number>();
  readonly addresses: Partial<Record<ProcessName, string>> = {};
  private readonly services: RunningProcess[] = [];
  private echo: ChildProcess | undefined;
  private envoy: EnvoyProcess | undefined;

  constructor(
    private readonly dir: string,
    private readonly options: BenchOptions,
  ) {}

  private childEnv(): Record<string, string> {
    const { cpuProfDir } = this.options;
    if (!cpuProfDir) return {};
    // Node refuses --cpu-prof in NODE_OPTIONS; this preload does the same through the inspector.
    const preload = path.join(repoRoot, "bench", "cpu-prof.mjs");
    const existing = process.env.NODE_OPTIONS ?? "";
    return {
      NODE_OPTIONS: `${existing} --import ${preload}`.trim(),
      BENCH_CPU_PROF_DIR: cpuProfDir,
    };
  }

  async startEcho(): Promise<void> {
    // The echo server binds port 0 and prints the address it got.
    const child = spawn(
      process.execPath,
      ["--import", "tsx", path.join(repoRoot, "bench", "echo", "server.ts")],
      {
        cwd: repoRoot,
        env: { ...process.env, ...this.childEnv() },
        stdio: ["ignore", "pipe", "inherit"],
      },
    );
    this.echo = child;
    const lines = createInterface({ input: child.stdout as NodeJS.ReadableStream });
    const listening = new Promise<string>((resolve, reject) => {
      lines.once("line", (line) => resolve((JSON.parse(line) as { listening: string }).listening));
      child.once("exit", (code) => reject(new Error(`echo server exited (${code})`)));
    });
    this.addresses.echo = await listening;
    this.pids.set("echo", child.pid as number);
  }

  async startServices(kinds: readonly ServiceKind[]): Promise<void> {
    const [user, product, order] = (await freePorts(3)) as [number, number, number];
    const ports = { user, product, order };
    const addr = (kind: ServiceKind) => `127.0.0.1:${ports[kind]}`;
    const shared = { SHOP_DATA_DIR: path.join(this.dir, "data"), ...this.childEnv() };
    for (const kind of kinds) {
      const env: Record<string, string> = { ...shared };
      if (kind === "order") {
        env.SHOP_USER_ADDR = addr("user");
        env.SHOP_PRODUCT_ADDR = addr("product");
      }
      const proc = spawnService(
        { name: kind, service: kind, host: "127.0.0.1", port: ports[kind], env },
        path.join(this.dir, "logs"),
      );
      this.services.push(proc);
      this.addresses[kind] = proc.address;
      this.pids.set(kind, proc.child.pid as number);
    }
    await Promise.all(this.services.map((proc) => waitServing(proc, 60_000)));
  }

  async startEnvoy(): Promise<void> {
    const endpoint = (kind: ProcessName) => {
      const address = this.addresses[kind];
      return address ? [{ host: "127.0.0.1", port: Number(address.split(":")[1]) }] : [];
    };
    // The repo's front door, access log included (it is part of the real thing), on port 0.
    this.envoy = spawnEnvoy({
      config: frontDoorConfig({
        services: {
          user: endpoint("user"),
          product: endpoint("product"),
          order: endpoint("order"),
        },
        accessLogPath: path.join(this.dir, "envoy-access.log"),
      }),
      logDir: this.dir,
      concurrency: this.options.envoyConcurrency,
      logLevel: "warn",
    });
    this.pids.set("envoy", this.envoy.child.pid as number);
    await this.envoy.waitReady();
    this.addresses.envoy = `127.0.0.1:${await this.envoy.listenerPort()}`;
  }

  async stop(): Promise<void> {
    const echo = this.echo;
    await Promise.allSettled([
      this.envoy?.stop(),
      ...this.services.map((proc) => stopProcess(proc, 10_000)),
      echo && stopProcess({ child: echo }, 10_000),
    ]);
  }
}

/** A user and a catalogue: one product with stock for any run, and enough for a page of 50. */
async function seed(fleet: Fleet): Promise<{ userId: string; productId: string }> {
  let userId = "";
  let productId = "";
  if (fleet.addresses.user) {
    const users = createClient(UserServiceService, fleet.addresses.user, {
      serviceName: "shop.user.v1.UserService",
    });
    const { user } = await users.createUser({
      user: {
        userId: "",
        email: "bench@shopmesh.dev",
        displayName: "Bench Shopper",
        createTime: undefined,
        updateTime: undefined,
      },
    });
    users.close();
    userId = user?.userId ?? "";
  }
  if (fleet.addresses.product) {
    const products = createClient(ProductServiceService, fleet.addresses.product, {
      serviceName: "shop.product.v1.ProductService",
    });
    const create = (name: string, stock: number) =>
      products.createProduct({
        product: {
          productId: "",
          name,
          description: "benchmark item",
          price: { currencyCode: "EUR", amountMinor: "1250" },
          stockQuantity: stock,
          createTime: undefined,
          updateTime: undefined,
        },
      });
    // The product every order buys: a billion units outlasts any run.
    productId = (await create("Bench item", 1_000_000_000)).product?.productId ?? "";
    for (let i = 1; i < 60; i++) await create(`Filler item ${i}`, 100);
    products.close();
  }
  return { userId, productId };
}

function snapshot(pids: Map<ProcessName, number>): Map<ProcessName, ProcSample | undefined> {
  return new Map([...pids].map(([name, pid]) => [name, sampleProcess(pid)]));
}

async function measure(
  target: Target,
  context: TargetContext,
  concurrency: number,
  durationS: number,
  fleet: Fleet,
  options: BenchOptions,
  scratch: string,
): Promise<RunResult> {
  for (const pid of fleet.pids.values()) resetPeak(pid);
  const before = snapshot(fleet.pids);
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
  const machineBusy = machineBusySeconds(machineBefore, sampleMachine());
  const after = snapshot(fleet.pids);

  const processes: Partial<Record<ProcessName, ProcessUsage>> = {};
  for (const [name, end] of after) {
    const start = before.get(name);
    if (!start || !end) continue;
    const cpuS = end.cpuS - start.cpuS;
    processes[name] = {
      cpuS,
      cpuPct: (100 * cpuS) / load.elapsedS,
      peakRssMb: end.peakRssKb / 1024,
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
      unrelatedCpuS: Math.max(0, machineBusy - ours - ghzCpuS - harnessCpuS),
      machineBusyPct: (100 * machineBusy) / (load.elapsedS * os.cpus().length),
    },
  };
}

/** `2025-01-31`, or `2025-01-31-2` … when that name is taken in `dir`. */
function reportName(dir: string, date: Date): string {
  const day = date.toISOString().slice(0, 10);
  for (let i = 1; ; i++) {
    const name = i === 1 ? day : `${day}-${i}`;
    if (![".md", ".json", ".svg"].some((ext) => existsSync(path.join(dir, name + ext)))) {
      return name;
    }
  }
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
  const needs = new Set(targets.flatMap((target) => target.path));
  for (const name of ["ghz", ...(needs.has("envoy") ? ["envoy"] : [])]) {
    if (!existsSync(tool(name))) {
      console.error(`bench: ${tool(name)} is missing; run \`npm run tools\``);
      return 1;
    }
  }

  const dir = await mkdtemp(path.join(os.tmpdir(), "shopmesh-bench-"));
  if (options.cpuProfDir) await mkdir(options.cpuProfDir, { recursive: true });
  const fleet = new Fleet(dir, options);
  const interrupted = async () => {
    console.error("\nbench: interrupted; stopping");
    await fleet.stop();
    if (!options.keep) await rm(dir, { recursive: true, force: true });
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);

  try {
    const kinds = (["user", "product", "order"] as const).filter((kind) => needs.has(kind));
    log(
      `starting ${[...(needs.has("echo") ? ["echo"] : []), ...kinds].join(", ")} (data in ${dir})`,
    );
    await Promise.all([
      needs.has("echo") ? fleet.startEcho() : undefined,
      kinds.length ? fleet.startServices(kinds) : undefined,
    ]);
    const { userId, productId } = await seed(fleet);
    if (needs.has("envoy")) {
      await fleet.startEnvoy();
      log(`envoy on ${fleet.addresses.envoy} (--concurrency ${options.envoyConcurrency})`);
    }
    const context: TargetContext = { addresses: fleet.addresses, userId, productId };
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
          fleet,
          options,
          dir,
        );
        runs.push(run);
        log(
          `${target.id.padEnd(14)} c=${String(concurrency).padEnd(3)} ${run.rps.toFixed(0).padStart(6)} req/s  p50 ${run.latencyMs.p50.toFixed(2)} ms  p99 ${run.latencyMs.p99.toFixed(2)} ms  errors ${run.errors}`,
        );
      }
    }
    await fleet.stop();

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
        envoy: needs.has("envoy")
          ? version(tool("envoy"), ["--version"], /\/(\d+\.\d+\.\d+)\//)
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
      },
      runs,
      ratios: ratioList,
      goals: goals(runs, ratioList),
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
    await fleet.stop();
    if (options.keep) log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
