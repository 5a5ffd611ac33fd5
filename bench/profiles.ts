// `npm run bench -- --profile`: where each Node process on one target's path spends its CPU, in
// three views of the same load, each on a fleet started for it. V8's sampling profile names the
// JavaScript; perf's on-CPU samples say what kind of work the CPU did, native code and helper
// threads included; V8's sampling heap profile says where the garbage that the collector spends
// a quarter of the CPU on is made. See bench/README.md ("Profiling").
import { spawnSync } from "node:child_process";
import { readdirSync, readFileSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { DEV_CERTS_DIR } from "../kit/security/security.js";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { Supervisor } from "../scripts/lib/supervisor.js";
import { buildDist } from "./lib/build.js";
import {
  type CpuProfile,
  formatSummary,
  type ProfileSummary,
  summarize,
} from "./lib/cpuprofile.js";
import { type FleetOptions, launch, seedFleets } from "./lib/fleet.js";
import { runLoad } from "./lib/ghz.js";
import {
  formatHeapSummary,
  type HeapProfile,
  type HeapSummary,
  summarizeHeap,
} from "./lib/heapprofile.js";
import { measure } from "./lib/measure.js";
import { defaultOutDir, positiveInt, seconds } from "./lib/options.js";
import { type KindShares, readPerf, recordPerf, sharesOf } from "./lib/perf.js";
import { reportName } from "./lib/report-name.js";
import type { RunResult } from "./lib/results.js";
import { type ProcessName, type Target, targetById } from "./lib/targets.js";

const log = (message: string) => console.log(`bench: ${message}`);

export const PROFILE_USAGE = `npm run bench -- --profile [options]

  Three loads of one target, each on a fleet started for it: the first with V8's sampling
  profiler in every Node process on the target's path, the second sampled by Linux perf, the
  third with V8's sampling heap profiler.

  --target ID              (default create-direct-tls)
  --concurrency N          (default 16)
  --duration SECONDS       per load (default 15)
  --warmup SECONDS         before each load, unmeasured (default 3)
  --perf-seconds SECONDS   perf samples the middle of the second load (default 8)
  --top N                  functions and packages listed per view (default 25)
  --out DIR                where <date>-profile-<target>.md and .json go (default bench/results)
  --keep                   keep the temp dir: the .cpuprofile and .heapprofile files,
                           perf.data, logs`;

interface ProfileOptions {
  target: Target;
  concurrency: number;
  durationS: number;
  warmupS: number;
  perfS: number;
  top: number;
  outDir: string;
  keep: boolean;
}

function parse(argv: string[]): ProfileOptions | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      profile: { type: "boolean" },
      target: { type: "string" },
      concurrency: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      "perf-seconds": { type: "string" },
      top: { type: "string" },
      out: { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const durationS = seconds(values.duration ?? "15", "--duration");
  const perfS = seconds(values["perf-seconds"] ?? "8", "--perf-seconds");
  if (perfS <= 0 || perfS > durationS) {
    throw new Error("--perf-seconds must be more than 0 and at most --duration");
  }
  return {
    target: targetById(values.target ?? "create-direct-tls"),
    concurrency: positiveInt(values.concurrency ?? "16", "--concurrency"),
    durationS,
    warmupS: seconds(values.warmup ?? "3", "--warmup"),
    perfS,
    top: positiveInt(values.top ?? "25", "--top"),
    outDir: path.resolve(values.out ?? defaultOutDir),
    keep: values.keep === true,
  };
}

/** The Node processes on a target's path: Envoy and PostgreSQL are not profiled. */
const nodeProcesses = (target: Target) =>
  target.path.filter((name) => !["envoy", "tls-envoy", "postgres"].includes(name));

/** One load's figures: calls, and CPU per call of each profiled process. */
interface LoadFigures {
  rps: number;
  p50Ms: number;
  errors: number;
  cpuPerCallMs: Partial<Record<ProcessName, number>>;
}

const figuresOf = (run: RunResult, names: readonly ProcessName[]): LoadFigures => ({
  rps: run.rps,
  p50Ms: run.latencyMs.p50,
  errors: run.errors,
  cpuPerCallMs: Object.fromEntries(
    names.map((name) => [name, (1000 * (run.processes[name]?.cpuS ?? 0)) / Math.max(1, run.ok)]),
  ),
});

/**
 * Starts the target's fleet in `dir` with `fleetOptions`, warms it up, and measures one load;
 * `during` runs alongside it. The fleet is stopped before this returns, so a profiler's preload
 * has written its file.
 */
async function underLoad<T>(
  options: ProfileOptions,
  dir: string,
  fleetOptions: FleetOptions,
  during: (pids: Map<ProcessName, number>) => Promise<T>,
) {
  const { target } = options;
  await mkdir(dir, { recursive: true });
  const supervisor = new Supervisor();
  try {
    const launched = await launch(
      supervisor,
      new Set(target.path),
      new Set(target.storage ? [target.storage] : []),
      dir,
      fleetOptions,
    );
    const context = {
      addresses: launched.addresses,
      fleets: await seedFleets(launched.plans),
      certs: DEV_CERTS_DIR,
    };
    if (options.warmupS > 0) {
      await runLoad(target.call(context), {
        ghz: tool("ghz"),
        address: context.addresses[target.entry] as string,
        concurrency: options.concurrency,
        durationS: options.warmupS,
        outFile: path.join(dir, "warmup.json"),
        cpus: os.cpus().length,
      });
    }
    const fromUs = Number(process.hrtime.bigint() / 1000n);
    const [run, extra] = await Promise.all([
      measure(
        target,
        context,
        options.concurrency,
        options.durationS,
        launched.pids,
        {
          ghzCpus: os.cpus().length,
        },
        dir,
        undefined,
      ),
      during(launched.pids),
    ]);
    const untilUs = Number(process.hrtime.bigint() / 1000n);
    if (run.ok === 0) throw new Error(`no call of ${target.id} succeeded: ${run.errors} failed`);
    return { run, extra, pids: launched.pids, fromUs, untilUs };
  } finally {
    await supervisor.stop();
  }
}

/** The fleet of one view: compiled as the image runs it, one Envoy worker, and its profiler. */
const fleetWith = (profiler: { cpuProfDir?: string; heapProfDir?: string }): FleetOptions => ({
  gc: false,
  runtime: "compiled",
  envoyConcurrency: 1,
  cpuProfDir: profiler.cpuProfDir,
  heapProfDir: profiler.heapProfDir,
});

/** Each process's V8 profile over the measured load, from the files its preload wrote. */
async function v8View(options: ProfileOptions, dir: string) {
  const profDir = path.join(dir, "cpuprofile");
  await mkdir(profDir, { recursive: true });
  const fleet = fleetWith({ cpuProfDir: profDir });
  log(`V8's profiler: ${options.target.id} at c=${options.concurrency} for ${options.durationS} s`);
  const load = await underLoad(options, path.join(dir, "v8"), fleet, async () => undefined);
  const files = readdirSync(profDir);
  const summaries: Partial<Record<ProcessName, ProfileSummary>> = {};
  for (const name of nodeProcesses(options.target)) {
    const file = files.find((f) => f.endsWith(`-${load.pids.get(name)}.cpuprofile`));
    if (!file) throw new Error(`${name} wrote no .cpuprofile into ${profDir}`);
    const profile = JSON.parse(readFileSync(path.join(profDir, file), "utf8")) as CpuProfile;
    summaries[name] = summarize(profile, load.fromUs, load.untilUs);
  }
  return { figures: figuresOf(load.run, nodeProcesses(options.target)), summaries };
}

/** Each process's on-CPU samples by kind, from perf over the middle of a second load. */
async function perfView(options: ProfileOptions, dir: string) {
  const file = path.join(dir, "perf.data");
  const fleet = fleetWith({});
  log(`perf: ${options.target.id} at c=${options.concurrency}, ${options.perfS} s sampled`);
  const names = nodeProcesses(options.target);
  const load = await underLoad(options, path.join(dir, "perf"), fleet, async (pids) => {
    await new Promise((resolve) =>
      setTimeout(resolve, ((options.durationS - options.perfS) / 2) * 1000),
    );
    try {
      await recordPerf(
        names.map((name) => pids.get(name) as number),
        options.perfS,
        file,
      );
      return undefined;
    } catch (error) {
      return (error as Error).message.split("\n")[0];
    }
  });
  const failed = load.extra;
  if (failed) return { figures: figuresOf(load.run, names), failed };
  const samples = await readPerf(file);
  const shares: Partial<Record<ProcessName, KindShares>> = {};
  for (const name of names) shares[name] = sharesOf(samples, load.pids.get(name) as number);
  return { figures: figuresOf(load.run, names), shares };
}

/**
 * Each process's allocations over a third load, from V8's sampling heap profiler: its preload
 * starts sampling when the load starts (SIGUSR2) and writes the profile as the process exits.
 */
async function heapView(options: ProfileOptions, dir: string) {
  const profDir = path.join(dir, "heapprofile");
  await mkdir(profDir, { recursive: true });
  const fleet = fleetWith({ heapProfDir: profDir });
  log(`V8's heap profiler: ${options.target.id} at c=${options.concurrency}`);
  const names = nodeProcesses(options.target);
  const load = await underLoad(options, path.join(dir, "heap"), fleet, async (pids) => {
    for (const name of names) process.kill(pids.get(name) as number, "SIGUSR2");
  });
  const summaries: Partial<Record<ProcessName, HeapSummary>> = {};
  for (const name of names) {
    const file = path.join(profDir, `${load.pids.get(name)}.heapprofile`);
    summaries[name] = summarizeHeap(JSON.parse(readFileSync(file, "utf8")) as HeapProfile);
  }
  return { figures: figuresOf(load.run, names), calls: load.run.ok, summaries };
}

type V8View = Awaited<ReturnType<typeof v8View>>;
type PerfView = Awaited<ReturnType<typeof perfView>>;
type HeapView = Awaited<ReturnType<typeof heapView>>;

/** The .json beside the report. */
export interface ProfileReport {
  date: string;
  build: { commit: string; dirty: boolean };
  settings: Omit<ProfileOptions, "target"> & { target: string };
  v8: V8View;
  perf: PerfView;
  heap: HeapView;
}

const pct = (share: number) => `${(100 * share).toFixed(1)}%`;

/** A paragraph and a preformatted block under it, in the report. */
const textBlock = (heading: string, body: string[]) => [heading, "", "```text", ...body, "```", ""];

function report(
  options: ProfileOptions,
  started: Date,
  build: { commit: string; dirty: boolean },
  v8: V8View,
  perf: PerfView,
  heap: HeapView,
): string {
  const { target } = options;
  const names = nodeProcesses(target);
  const loadRow = (label: string, figures: LoadFigures) =>
    `| ${label} | ${figures.rps.toFixed(0)} | ${figures.p50Ms.toFixed(2)} | ${figures.errors} | ${names
      .map((name) => (figures.cpuPerCallMs[name] ?? 0).toFixed(3))
      .join(" | ")} |`;
  const lines = [
    `# Where the CPU goes: ${target.label} at c=${options.concurrency}, ${started.toISOString().slice(0, 16).replace("T", " ")} UTC`,
    "",
    `- ${target.description}`,
    `- Build: commit \`${build.commit.slice(0, 12)}\`${build.dirty ? " with uncommitted changes" : ""}, the services compiled as the image runs them; Node ${process.version}; ${os.cpus().length} cores shared by ghz and every process.`,
    `- Three loads of ${options.durationS} s at c=${options.concurrency}, each after a ${options.warmupS} s warm-up on a fleet started for it: the first with V8's sampling profiler in each Node process (1 ms, wall-clock time: a function's self time includes the native calls it waits in, and \`(program)\` is native work outside JavaScript); the second with \`perf record -F 499\` on every thread of those processes for the middle ${options.perfS} s, and V8's profiler off; the third with V8's sampling heap profiler (a sample per 16 KB allocated on average, objects already collected included), from the start of the load until the fleet stops just after it.`,
    `- Made by \`npm run bench -- --profile --target ${target.id} --concurrency ${options.concurrency} --duration ${options.durationS}\` (bench/profiles.ts).`,
    "",
    "## The loads",
    "",
    `| load | req/s | p50 ms | errors | ${names.map((name) => `CPU per call, ${name}, ms`).join(" | ")} |`,
    `|---|---:|---:|---:|${names.map(() => "---:").join("|")}|`,
    loadRow("under V8's profiler", v8.figures),
    loadRow("under perf", perf.figures),
    loadRow("under the heap profiler", heap.figures),
    "",
  ];
  for (const name of names) {
    lines.push(`## ${name}`, "");
    const shares = "shares" in perf ? perf.shares?.[name] : undefined;
    if (shares) {
      lines.push(
        `On-CPU samples by kind (perf): ${shares.samples} samples, ${pct(shares.mainThreadSamples / Math.max(1, shares.samples))} of them on the main thread, the rest in V8's and libuv's helper threads. Kinds go by library, and inside node by symbol (bench/lib/perf.ts).`,
        "",
        "| kind | all threads | main thread |",
        "|---|---:|---:|",
        ...shares.kinds.map((row) => `| ${row.kind} | ${pct(row.all)} | ${pct(row.mainThread)} |`),
        "",
      );
    } else {
      lines.push(
        `On-CPU samples: perf could not record (${"failed" in perf ? perf.failed : "no samples"}).`,
        "",
      );
    }
    const summary = v8.summaries[name];
    if (summary) {
      lines.push(
        ...textBlock(
          "V8's sampling profile over the first load (frames read back through the build's source maps):",
          formatSummary(summary, options.top),
        ),
      );
    }
    const allocations = heap.summaries[name];
    if (allocations) {
      lines.push(
        ...textBlock(
          "Where it allocates, over the third load (V8's sampling heap profiler):",
          formatHeapSummary(allocations, heap.calls, options.top),
        ),
      );
    }
  }
  return `${lines.join("\n").trimEnd()}\n`;
}

/** Each process's summary with every list cut to its first `top` rows, for the .json. */
function topRows<S extends object>(
  summaries: Partial<Record<ProcessName, S>>,
  top: number,
): Partial<Record<ProcessName, S>> {
  const cut = (summary: S) =>
    Object.fromEntries(
      Object.entries(summary).map(([key, value]) => [
        key,
        Array.isArray(value) ? value.slice(0, top) : value,
      ]),
    ) as S;
  return Object.fromEntries(
    Object.entries(summaries).map(([process, summary]) => [process, cut(summary as S)]),
  );
}

async function main(): Promise<number> {
  let options: ProfileOptions | undefined;
  try {
    options = parse(process.argv.slice(2));
  } catch (error) {
    console.error(`bench: ${(error as Error).message}\n\n${PROFILE_USAGE}`);
    return 2;
  }
  if (!options) {
    console.log(PROFILE_USAGE);
    return 0;
  }
  const started = new Date();
  const git = (...args: string[]) =>
    spawnSync("git", args, { cwd: repoRoot, encoding: "utf8" }).stdout.trim();
  const build = {
    commit: git("rev-parse", "HEAD"),
    dirty: git("status", "--porcelain", "--untracked-files=no") !== "",
  };
  log("building dist/ (npm run build)");
  buildDist();
  const dir = await mkdtemp(path.join(os.tmpdir(), "shopmesh-profile-"));
  if (options.target.storage === "postgres") await chmod(dir, 0o711);
  try {
    const v8 = await v8View(options, dir);
    const perf = await perfView(options, dir);
    if ("failed" in perf) log(`perf could not record: ${perf.failed}`);
    const heap = await heapView(options, dir);
    await mkdir(options.outDir, { recursive: true });
    const name = reportName(options.outDir, started, `profile-${options.target.id}`);
    const json: ProfileReport = {
      date: started.toISOString(),
      build,
      settings: { ...options, target: options.target.id },
      v8: { ...v8, summaries: topRows(v8.summaries, options.top) },
      perf,
      heap: { ...heap, summaries: topRows(heap.summaries, options.top) },
    };
    await writeFile(
      path.join(options.outDir, `${name}.json`),
      `${JSON.stringify(json, null, 2)}\n`,
    );
    await writeFile(
      path.join(options.outDir, `${name}.md`),
      report(options, started, build, v8, perf, heap),
    );
    log(`wrote ${path.join(options.outDir, name)}.{md,json}`);
    return 0;
  } catch (error) {
    console.error(`bench: ${(error as Error).stack ?? error}`);
    return 1;
  } finally {
    if (options.keep) log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  }
}

process.exitCode = await main();
