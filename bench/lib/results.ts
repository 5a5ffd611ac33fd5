// The shape of a benchmark's results (the .json file) and the ratios and goals derived from them.
import type { GcTotals } from "./gc.js";
import type { LoadResult } from "./ghz.js";
import type { SoakResult } from "./soak.js";
import type { Runtime, StartupResult } from "./startup.js";
import type { Fleet, ProcessName } from "./targets.js";

/** One process over one measured run. */
export interface ProcessUsage {
  /** CPU seconds (user + system, all threads) spent during the run. */
  cpuS: number;
  /** cpuS as a share of one core over the run's wall time, in percent. */
  cpuPct: number;
  /** Peak RSS during the run (VmHWM, reset before the run), MiB. */
  peakRssMb: number;
  /** Garbage collection during the run, for a Node process of a run with --gc. */
  gc?: GcTotals;
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
    /** Busy CPU of the whole machine minus steal, the processes above, ghz and the harness. */
    unrelatedCpuS: number;
    /**
     * CPU seconds the hypervisor gave to others while this machine had work (steal), over all
     * cores. Absent in reports written before 2026-12-02-3.
     */
    stealS?: number;
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
    /** Whether the processes counted their garbage collection (--gc); absent before it existed. */
    gc?: boolean;
    /** How the services ran: compiled JavaScript or tsx (absent in runs before the option). */
    runtime?: "compiled" | "tsx";
    /** Timed starts per service and runtime, and the idle time before RSS is read. */
    startupRuns: number;
    idleS: number;
  };
  runs: RunResult[];
  /** Spawn to SERVING and idle RSS of each service, compiled and through tsx. */
  startup: StartupResult[];
  ratios: Ratio[];
  /** RSS over a long run, when asked for (--soak). */
  soak?: SoakResult;
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

/**
 * One of the goals, judged on the production shape (mutual TLS, tokens checked, logs on)
 * and shown beside it on the plaintext development profile ("bare"), so each feature's cost is
 * visible.
 */
export interface Goal {
  name: string;
  /** What was measured on the production shape, in the goal's unit. */
  measured: number | undefined;
  /** The same on the development profile. */
  bare: number | undefined;
  limit: number;
  comparison: ">=" | "<=";
  /** Whether the production-shape figure meets the goal; undefined when not measured. */
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

/** CPU milliseconds per successful call, summed over the processes on the target's path. */
export function cpuPerCallMs(run: RunResult, path: readonly ProcessName[]): number | undefined {
  if (run.ok === 0) return undefined;
  const cpuS = path.reduce((sum, name) => sum + (run.processes[name]?.cpuS ?? 0), 0);
  return (cpuS * 1000) / run.ok;
}

/** What the goals are judged on besides the load runs. */
export interface GoalInputs {
  /** The processes on each target's path. */
  paths: ReadonlyMap<string, readonly ProcessName[]>;
  startup?: readonly StartupResult[];
  soak?: SoakResult;
}

/** The performance targets, judged on this run. */
export function goals(runs: readonly RunResult[], inputs: GoalInputs): Goal[] {
  const rps = (target: string, c: number) => findRun(runs, target, c)?.rps;
  const ratio = (top: string, bottom: string, c: number) => {
    const a = rps(top, c);
    const b = rps(bottom, c);
    return a !== undefined && b ? a / b : undefined;
  };
  const lowest = (values: (number | undefined)[]) => {
    const known = values.filter((value): value is number => value !== undefined);
    return known.length ? Math.min(...known) : undefined;
  };
  // CPU per order at c=16 (the figure), else the highest concurrency measured.
  const cpuPerOrder = (target: string) => {
    const candidates = runs.filter((run) => run.target === target);
    const run =
      candidates.find((r) => r.concurrency === 16) ??
      candidates.sort((a, b) => b.concurrency - a.concurrency)[0];
    return run && cpuPerCallMs(run, inputs.paths.get(target) ?? []);
  };
  // Production runs compiled JavaScript; `npm start` (the development profile) runs tsx.
  const started = (runtime: Runtime) =>
    (inputs.startup ?? []).filter((result) => result.runtime === runtime);
  const soakFleet: Fleet | undefined = inputs.soak
    ? inputs.soak.target.endsWith("-tls")
      ? "tls"
      : "plaintext"
    : undefined;
  const soakRss = Object.values(inputs.soak?.rssMb ?? {});
  const rssAfter = soakRss.length ? Math.max(...soakRss.map((r) => r.first)) : undefined;
  const growth = soakRss.length
    ? Math.max(...soakRss.map((r) => (100 * (r.second - r.first)) / r.first))
    : undefined;
  const bySoak = (value: number | undefined, fleet: Fleet) =>
    soakFleet === fleet ? value : undefined;

  const goal = (
    name: string,
    comparison: ">=" | "<=",
    limit: number,
    measured: number | undefined,
    bare: number | undefined,
  ): Goal => ({
    name,
    measured,
    bare,
    limit,
    comparison,
    met:
      measured === undefined
        ? undefined
        : comparison === ">="
          ? measured >= limit
          : measured <= limit,
  });
  const envoyWorst = (suffix: string) =>
    lowest(
      [1, 64].flatMap((c) => [
        ratio(`get-envoy${suffix}`, `get-direct${suffix}`, c),
        ratio(`create-envoy${suffix}`, `create-direct${suffix}`, c),
      ]),
    );
  return [
    goal(
      "CreateOrder direct p50 at c=1 (ms)",
      "<=",
      2,
      findRun(runs, "create-direct-tls", 1)?.latencyMs.p50,
      findRun(runs, "create-direct", 1)?.latencyMs.p50,
    ),
    goal(
      "CPU per CreateOrder, all processes, c=16 (ms)",
      "<=",
      1.2,
      cpuPerOrder("create-direct-tls"),
      cpuPerOrder("create-direct"),
    ),
    goal(
      "CreateOrder ÷ echo at c=64 (rps)",
      ">=",
      0.15,
      ratio("create-direct-tls", "echo", 64),
      ratio("create-direct", "echo", 64),
    ),
    goal(
      "GetProduct ÷ echo at c=64 (rps)",
      ">=",
      0.6,
      ratio("get-direct-tls", "echo", 64),
      ratio("get-direct", "echo", 64),
    ),
    goal("kit echo ÷ bare echo at c=64 (rps)", ">=", 0.9, ratio("kit-echo", "echo", 64), undefined),
    goal(
      "Envoy ÷ direct, worst of GetProduct and CreateOrder at c=1 and c=64 (rps)",
      ">=",
      0.85,
      envoyWorst("-tls"),
      envoyWorst(""),
    ),
    goal(
      `RSS per service after ${inputs.soak?.calls ?? "100k"} calls, largest (MiB)`,
      "<=",
      80,
      bySoak(rssAfter, "tls"),
      bySoak(rssAfter, "plaintext"),
    ),
    goal(
      "RSS growth over the next as many calls, largest (%)",
      "<=",
      5,
      bySoak(growth, "tls"),
      bySoak(growth, "plaintext"),
    ),
    goal(
      "idle RSS per service, largest (MB)",
      "<=",
      80,
      worst(started("compiled"), (r) => r.idleRssMb),
      worst(started("tsx"), (r) => r.idleRssMb),
    ),
    goal(
      "start to SERVING, slowest service's median (ms)",
      "<=",
      1000,
      worst(started("compiled"), (r) => r.servingMs.median),
      worst(started("tsx"), (r) => r.servingMs.median),
    ),
  ];
}
