// Command-line options of `npm run bench`.
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { parseArgs } from "node:util";
import type { Runtime } from "../../scripts/lib/launcher.js";
import { TARGETS, targetById } from "./targets.js";

export interface BenchOptions {
  mode: "quick" | "full" | "custom";
  durationS: number;
  warmupS: number;
  concurrency: number[];
  /** Target ids, in the canonical measuring order. */
  targets: string[];
  outDir: string;
  envoyConcurrency: number;
  ghzCpus: number;
  /** Directory for the services' .cpuprofile files (node --cpu-prof); off when undefined. */
  cpuProfDir: string | undefined;
  /** Count each process's garbage collection and allocations per run (bench/gc-stats.mjs). */
  gc: boolean;
  /** Keep the temp directory (databases, logs, Envoy config) instead of removing it. */
  keep: boolean;
  /** Timed starts of each service per runtime (compiled, tsx); 0 skips the startup table. */
  startupRuns: number;
  /** Seconds a started service sits idle before its RSS is read. */
  idleS: number;
  /** How the services run: compiled JavaScript (as in production) or their TypeScript via tsx. */
  runtime: Runtime;
  /** Calls per half of the memory run; 0 for none. */
  soakCalls: number;
  soakTarget: string;
  /** Seconds without calls after the soak before RSS is read again; 0 skips it. */
  soakQuietS: number;
}

export const USAGE = `npm run bench -- [options]

  --quick                  short run: 3 s per target and concurrency, 1 s warm-up (< 3 min)
  --duration SECONDS       per target and concurrency (default 10; "5s" works too)
  --warmup SECONDS         per target, at the highest concurrency, not measured (default 3)
  --concurrency LIST       comma-separated (default 1,16,64)
  --targets LIST           comma-separated ids (default all): ${TARGETS.map((t) => t.id).join(", ")}
  --out DIR                where the .md, .json and .svg go (default bench/results)
  --envoy-concurrency N    Envoy worker threads (default 1)
  --ghz-cpus N             cores ghz may use (default: all)
  --cpu-prof DIR           run the services and the echo server with node --cpu-prof into DIR
  --gc                     count their garbage collection: bytes allocated, collections and
                           their pauses per call
  --startup-runs N         timed starts of each service, compiled and with tsx (default 5, quick 3;
                           0 skips them); builds dist/ first (npm run build)
  --idle SECONDS           how long a started service idles before its RSS is read (default 5)
  --runtime compiled|tsx   how the services run (default compiled, as the image runs them:
                           builds dist/ first; tsx runs the sources as npm start does)
  --soak N                 after the runs, N calls of --soak-target and N more, RSS after each
                           (off by default; the issue's figure is 100000: about 15 minutes)
  --soak-target ID         the target of --soak (default create-direct-tls)
  --soak-quiet SECONDS     then RSS again after that long without calls (default 75; 0 skips it)
  --keep                   keep the temp dir with the databases and logs
  -h, --help               this text

  --latency [--duration S] [--warmup S] [--out DIR]
                           instead: where a CreateOrder's time goes at c=1, from its traces
                           (bench/latency.ts; default 20 s per profile)
  --observability [--duration S]
                           instead: GetProduct's price of metrics and tracing
                           (bench/observability.ts)
  --against REF [--help]   instead: this checkout against another build, loaded in turns
                           (bench/against.ts)
  --profile [--help]       instead: where each process on one target's path spends its CPU,
                           from V8's profiler and from perf (bench/profiles.ts)`;

/** A flag's value as seconds: a non-negative number, "5s" too. */
export const seconds = (raw: string, flag: string) => {
  const value = Number(raw.replace(/s$/, ""));
  if (!Number.isFinite(value) || value < 0)
    throw new Error(`${flag} must be seconds, got "${raw}"`);
  return value;
};

/** A flag's value as an integer of at least 1. */
export const positiveInt = (raw: string, flag: string) => {
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) {
    throw new Error(`${flag} must be a positive integer, got "${raw}"`);
  }
  return value;
};

const runtimeOf = (raw: string): Runtime => {
  if (raw !== "compiled" && raw !== "tsx")
    throw new Error(`--runtime must be compiled or tsx, got "${raw}"`);
  return raw;
};

const nonNegativeInt = (raw: string, flag: string) => (raw === "0" ? 0 : positiveInt(raw, flag));

export const defaultOutDir = fileURLToPath(new URL("../results", import.meta.url));

/** Parses argv; undefined when --help was asked for. */
export function parseOptions(argv: string[]): BenchOptions | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      quick: { type: "boolean", default: false },
      duration: { type: "string" },
      warmup: { type: "string" },
      concurrency: { type: "string" },
      targets: { type: "string" },
      out: { type: "string" },
      "envoy-concurrency": { type: "string" },
      "ghz-cpus": { type: "string" },
      "cpu-prof": { type: "string" },
      gc: { type: "boolean", default: false },
      keep: { type: "boolean", default: false },
      "startup-runs": { type: "string" },
      idle: { type: "string" },
      runtime: { type: "string" },
      soak: { type: "string" },
      "soak-target": { type: "string" },
      "soak-quiet": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) return undefined;
  const quick = values.quick === true;
  const custom =
    values.duration !== undefined ||
    values.concurrency !== undefined ||
    values.targets !== undefined;
  const requested = values.targets?.split(",").map((id) => targetById(id.trim()).id);
  return {
    mode: custom ? "custom" : quick ? "quick" : "full",
    durationS: values.duration ? seconds(values.duration, "--duration") : quick ? 3 : 10,
    warmupS: values.warmup ? seconds(values.warmup, "--warmup") : quick ? 1 : 3,
    concurrency: (values.concurrency ?? "1,16,64")
      .split(",")
      .map((level) => positiveInt(level.trim(), "--concurrency")),
    targets: TARGETS.map((t) => t.id).filter((id) => !requested || requested.includes(id)),
    outDir: path.resolve(values.out ?? defaultOutDir),
    envoyConcurrency: positiveInt(values["envoy-concurrency"] ?? "1", "--envoy-concurrency"),
    ghzCpus: positiveInt(values["ghz-cpus"] ?? String(os.cpus().length), "--ghz-cpus"),
    cpuProfDir: values["cpu-prof"] ? path.resolve(values["cpu-prof"]) : undefined,
    gc: values.gc === true,
    keep: values.keep === true,
    startupRuns:
      values["startup-runs"] === undefined
        ? quick
          ? 3
          : 5
        : values["startup-runs"] === "0"
          ? 0
          : positiveInt(values["startup-runs"], "--startup-runs"),
    idleS: values.idle ? seconds(values.idle, "--idle") : 5,
    runtime: runtimeOf(values.runtime ?? "compiled"),
    soakCalls: values.soak ? nonNegativeInt(values.soak, "--soak") : 0,
    soakTarget: targetById(values["soak-target"] ?? "create-direct-tls").id,
    soakQuietS: seconds(values["soak-quiet"] ?? "75", "--soak-quiet"),
  };
}
