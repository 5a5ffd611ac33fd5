// The shape of a benchmark's results (the .json file) and the ratios and goals derived from them.
import type { LoadResult } from "./ghz.js";
import type { StartupResult } from "./startup.js";
import type { ProcessName } from "./targets.js";

/** One process over one measured run. */
export interface ProcessUsage {
  /** CPU seconds (user + system, all threads) spent during the run. */
  cpuS: number;
  /** cpuS as a share of one core over the run's wall time, in percent. */
  cpuPct: number;
  /** Peak RSS during the run (VmHWM, reset before the run), MiB. */
  peakRssMb: number;
}

/** One target at one concurrency. */
export interface RunResult extends Omit<LoadResult, "ghzCpuS"> {
  target: string;
  label: string;
  concurrency: number;
  /** The processes the bench started, measured over this run. */
  processes: Partial<Record<ProcessName, ProcessUsage>>;
  /** Everything else that used CPU on the machine during the run, seconds over all cores. */
  other: {
    /** The load generator (ghz). */
    ghzCpuS: number;
    /** This harness: mostly piping the services' log lines to their files. */
    harnessCpuS: number;
    /** Busy CPU of the whole machine minus the processes above and ghz and the harness. */
    unrelatedCpuS: number;
    /** The machine's busy share of all cores over the run, percent. */
    machineBusyPct: number;
  };
}

export interface BenchResults {
  version: 1;
  /** ISO time the run started. */
  date: string;
  mode: "quick" | "full" | "custom";
  machine: {
    cores: number;
    cpuModel: string;
    memoryGb: number;
    kernel: string;
    node: string;
    ghz: string;
    envoy: string;
    /** The PostgreSQL server's version, or "not run". */
    postgres?: string;
    /** 1-minute load average before and after the run. */
    loadAverage: { before: number; after: number };
  };
  settings: {
    durationS: number;
    warmupS: number;
    concurrency: number[];
    targets: string[];
    /** Envoy worker threads. */
    envoyConcurrency: number;
    /** ghz's --cpus. */
    ghzCpus: number;
    /** SHOP_LOG_LEVEL of the services. */
    logLevel: string;
    /** Whether the services ran with --cpu-prof. */
    cpuProfile: boolean;
    /** Timed starts per service and runtime, and the idle time before RSS is read. */
    startupRuns: number;
    idleS: number;
  };
  runs: RunResult[];
  /** Spawn to SERVING and idle RSS of each service, compiled and through tsx. */
  startup: StartupResult[];
  ratios: Ratio[];
  goals: Goal[];
  /** Seconds the whole run took, startup included. */
  wallS: number;
}

/** A throughput ratio at one concurrency: numerator rps ÷ denominator rps. */
export interface Ratio {
  name: string;
  concurrency: number;
  numerator: string;
  denominator: string;
  value: number;
}

export interface Goal {
  name: string;
  /** What was measured, in the goal's unit. */
  measured: number | undefined;
  limit: number;
  comparison: ">=" | "<=";
  met: boolean | undefined;
}

export const RATIO_PAIRS: readonly { name: string; numerator: string; denominator: string }[] = [
  { name: "kit echo ÷ echo", numerator: "kit-echo", denominator: "echo" },
  { name: "GetProduct ÷ echo", numerator: "get-direct", denominator: "echo" },
  { name: "ListProducts(50) ÷ echo", numerator: "list-products", denominator: "echo" },
  { name: "CreateOrder ÷ echo", numerator: "create-direct", denominator: "echo" },
  { name: "Envoy ÷ direct (GetProduct)", numerator: "get-envoy", denominator: "get-direct" },
  { name: "Envoy ÷ direct (CreateOrder)", numerator: "create-envoy", denominator: "create-direct" },
  {
    name: "sqlite3 ÷ better-sqlite3 (GetProduct)",
    numerator: "get-direct-sqlite3",
    denominator: "get-direct",
  },
  {
    name: "PostgreSQL ÷ SQLite (GetProduct)",
    numerator: "get-direct-pg",
    denominator: "get-direct",
  },
  {
    name: "sqlite3 ÷ better-sqlite3 (CreateOrder)",
    numerator: "create-direct-sqlite3",
    denominator: "create-direct",
  },
  {
    name: "PostgreSQL ÷ SQLite (CreateOrder)",
    numerator: "create-direct-pg",
    denominator: "create-direct",
  },
  // The price of the security boundary: the production shape over the plaintext development
  // profile, same rpc, same path.
  {
    name: "mTLS+JWT ÷ plaintext (GetProduct direct)",
    numerator: "get-direct-tls",
    denominator: "get-direct",
  },
  {
    name: "TLS+JWT ÷ plaintext (GetProduct via Envoy)",
    numerator: "get-envoy-tls",
    denominator: "get-envoy",
  },
  {
    name: "mTLS ÷ plaintext (CreateOrder direct)",
    numerator: "create-direct-tls",
    denominator: "create-direct",
  },
  {
    name: "TLS ÷ plaintext (CreateOrder via Envoy)",
    numerator: "create-envoy-tls",
    denominator: "create-envoy",
  },
];

/** The largest value over results; undefined for none. */
function worst<T>(results: readonly T[], value: (result: T) => number): number | undefined {
  return results.length ? Math.max(...results.map(value)) : undefined;
}

export function findRun(runs: readonly RunResult[], target: string, concurrency: number) {
  return runs.find((run) => run.target === target && run.concurrency === concurrency);
}

export function ratios(runs: readonly RunResult[], levels: readonly number[]): Ratio[] {
  const result: Ratio[] = [];
  for (const pair of RATIO_PAIRS) {
    for (const concurrency of levels) {
      const top = findRun(runs, pair.numerator, concurrency);
      const bottom = findRun(runs, pair.denominator, concurrency);
      if (!top || !bottom || bottom.rps === 0) continue;
      result.push({ ...pair, concurrency, value: top.rps / bottom.rps });
    }
  }
  return result;
}

/** The performance targets, judged on this run. */
export function goals(
  runs: readonly RunResult[],
  ratioList: readonly Ratio[],
  startup: readonly StartupResult[] = [],
): Goal[] {
  const judge = (
    name: string,
    measured: number | undefined,
    comparison: ">=" | "<=",
    limit: number,
  ): Goal => ({
    name,
    measured,
    limit,
    comparison,
    met:
      measured === undefined
        ? undefined
        : comparison === ">="
          ? measured >= limit
          : measured <= limit,
  });
  const compiled = startup.filter((result) => result.runtime === "compiled");
  const getVsEcho = ratioList.find((r) => r.name === "GetProduct ÷ echo" && r.concurrency === 64);
  const createP50 = findRun(runs, "create-direct", 1)?.latencyMs.p50;
  const envoy = ratioList.filter((r) => r.name.startsWith("Envoy ÷ direct"));
  const worstEnvoy = envoy.length ? Math.min(...envoy.map((r) => r.value)) : undefined;
  return [
    judge("GetProduct direct at c=64 ÷ echo (rps)", getVsEcho?.value, ">=", 0.6),
    judge("CreateOrder direct p50 at c=1 (ms)", createP50, "<=", 2),
    judge("Envoy ÷ direct, worst target and concurrency (rps)", worstEnvoy, ">=", 0.85),
    judge(
      "Compiled service, spawn to SERVING, slowest median (ms)",
      worst(compiled, (r) => r.servingMs.median),
      "<=",
      1000,
    ),
    judge(
      "Compiled service, idle RSS, largest (MB)",
      worst(compiled, (r) => r.idleRssMb),
      "<=",
      80,
    ),
  ];
}
