// npm run bench: start the mesh and a bare echo server, load each target with ghz at fixed
// concurrency levels, and write bench/results/<date>.{md,json,svg}. See bench/README.md.

import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { DEV_CERTS_DIR } from "../kit/security/security.js";
import { tool } from "../scripts/lib/launcher.js";
import { postgresBinDir } from "../scripts/lib/postgres.js";
import { Supervisor } from "../scripts/lib/supervisor.js";
import { buildDist } from "./lib/build.js";
import { chartSvg } from "./lib/chart.js";
import { gcDirOf, launch, seedFleets } from "./lib/fleet.js";
import { runLoad } from "./lib/ghz.js";
import { measure } from "./lib/measure.js";
import { type BenchOptions, parseOptions, USAGE } from "./lib/options.js";
import { markdownReport } from "./lib/report.js";
import { reportName } from "./lib/report-name.js";
import { type BenchResults, goals, type RunResult, ratios } from "./lib/results.js";
import { type SoakResult, soak } from "./lib/soak.js";
import { measureStartup, type StartupResult } from "./lib/startup.js";
import { TARGETS, type TargetContext, targetById } from "./lib/targets.js";

const log = (message: string) => console.log(`bench: ${message}`);

function version(command: string, args: string[], pattern: RegExp): string {
  // Some tools print their version on stderr.
  const { stdout, stderr } = spawnSync(command, args, { encoding: "utf8" });
  const out = `${stdout ?? ""}${stderr ?? ""}`;
  return pattern.exec(out)?.[1] ?? (out.trim() || "unknown");
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
    const fleets = await seedFleets(plans);
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
        quietS: options.soakQuietS,
        ghz: tool("ghz"),
        outFile: path.join(dir, "soak.json"),
        cpus: options.ghzCpus,
      });
      for (const [name, rss] of Object.entries(soakResult.rssMb)) {
        const quiet =
          rss.quiet === undefined ? "" : `, ${rss.quiet.toFixed(0)} MiB after the calls stopped`;
        log(
          `soak: ${name} RSS ${rss.first.toFixed(0)} MiB, then ${rss.second.toFixed(0)} MiB${quiet}`,
        );
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
// `--against REF`: this checkout against another build, in turns (bench/against.ts).
// `--profile`: where each process on one target's path spends its CPU (bench/profiles.ts).
if (process.argv.some((arg) => arg === "--against" || arg.startsWith("--against="))) {
  await import("./against.js");
} else if (process.argv.includes("--profile")) await import("./profiles.js");
else if (process.argv.includes("--observability")) await import("./observability.js");
else if (process.argv.includes("--latency")) await import("./latency.js");
else process.exitCode = await main();
