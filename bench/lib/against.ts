// `npm run bench -- --against REF`: two builds measured in turns on one machine. Each slice is a
// short load of one build; the builds alternate, so a machine that speeds up or slows down over
// the run shifts both alike. Here: the figures of one slice, the comparison of the slices of one
// target and concurrency, and the report.
import type { RunResult } from "./results.js";
import { median } from "./stats.js";
import { type ProcessName, type Target, targetById } from "./targets.js";

/** The build given as --against, and the checkout the bench runs from. */
export type Side = "base" | "new";

/** One slice, in the units the comparison uses. */
export interface Slice {
  side: Side;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU per successful call, ms, summed over the processes on the target's path. */
  cpuMs: number;
  /** The same for each of those processes. */
  cpuMsOf: Partial<Record<ProcessName, number>>;
  /** KB allocated on V8's heaps per call, over the path's Node processes (--gc only). */
  kbPerCall?: number;
  errors: number;
  /** CPU seconds the hypervisor took from the machine during the slice. */
  stealS: number;
  /** Successful calls of the `--alongside` load during the slice and a second around it. */
  alongsideOk?: number;
}

export function sliceOf(side: Side, target: Target, run: RunResult): Slice {
  const calls = Math.max(1, run.ok);
  const cpuMsOf: Slice["cpuMsOf"] = {};
  let allocated = 0;
  let counted = false;
  for (const name of target.path) {
    const usage = run.processes[name];
    if (!usage) continue;
    cpuMsOf[name] = (usage.cpuS * 1000) / calls;
    if (usage.gc) {
      allocated += usage.gc.allocatedBytes;
      counted = true;
    }
  }
  return {
    side,
    rps: run.rps,
    p50Ms: run.latencyMs.p50,
    p99Ms: run.latencyMs.p99,
    cpuMs: Object.values(cpuMsOf).reduce((sum, ms) => sum + ms, 0),
    cpuMsOf,
    ...(counted && { kbPerCall: allocated / 1000 / calls }),
    errors: run.errors,
    stealS: run.other.stealS ?? 0,
  };
}

/** Medians of one side's slices (its errors summed). */
export type SideSummary = Pick<
  Slice,
  "rps" | "p50Ms" | "p99Ms" | "cpuMs" | "cpuMsOf" | "kbPerCall" | "errors"
>;

export interface Comparison {
  target: string;
  label: string;
  concurrency: number;
  base: SideSummary;
  new: SideSummary;
  /** Pairs (the i-th slice of each side) in which the new build spent less CPU per call. */
  newLower: number;
  /** Pairs that differ at all; a tie counts for neither. */
  pairs: number;
  /**
   * Two-sided sign test over the pairs: the chance of a split at least this uneven if either
   * build were as likely to win each pair.
   */
  p: number;
  /** The same split for each process on the path. */
  splitOf: Partial<Record<ProcessName, { newLower: number; pairs: number }>>;
  slices: Slice[];
}

function summary(slices: readonly Slice[]): SideSummary {
  const names = [...new Set(slices.flatMap((s) => Object.keys(s.cpuMsOf)))] as ProcessName[];
  const kb = slices.flatMap((s) => (s.kbPerCall === undefined ? [] : [s.kbPerCall]));
  return {
    rps: median(slices.map((s) => s.rps)),
    p50Ms: median(slices.map((s) => s.p50Ms)),
    p99Ms: median(slices.map((s) => s.p99Ms)),
    cpuMs: median(slices.map((s) => s.cpuMs)),
    cpuMsOf: Object.fromEntries(
      names.map((name) => [name, median(slices.map((s) => s.cpuMsOf[name] ?? 0))]),
    ),
    ...(kb.length > 0 && { kbPerCall: median(kb) }),
    errors: slices.reduce((sum, s) => sum + s.errors, 0),
  };
}

/** P(X ≤ k or X ≥ n − k) for X ~ Binomial(n, ½), k the smaller side: the sign test's p. */
export function signTestP(wins: number, pairs: number): number {
  if (pairs === 0) return 1;
  const k = Math.min(wins, pairs - wins);
  let term = 0.5 ** pairs; // C(n, 0) / 2^n
  let tail = term;
  for (let j = 1; j <= k; j++) {
    term = (term * (pairs - j + 1)) / j;
    tail += term;
  }
  return Math.min(1, 2 * tail);
}

/** Pairs (the i-th slice of each side) in which `value` was lower for the new build. */
function split(
  base: readonly Slice[],
  next: readonly Slice[],
  value: (slice: Slice) => number,
): { newLower: number; pairs: number } {
  let newLower = 0;
  let pairs = 0;
  for (let i = 0; i < Math.min(base.length, next.length); i++) {
    const [b, n] = [value(base[i] as Slice), value(next[i] as Slice)];
    if (b === n) continue;
    pairs++;
    if (n < b) newLower++;
  }
  return { newLower, pairs };
}

export function compare(target: Target, concurrency: number, slices: Slice[]): Comparison {
  const base = slices.filter((s) => s.side === "base");
  const next = slices.filter((s) => s.side === "new");
  const { newLower, pairs } = split(base, next, (s) => s.cpuMs);
  const names = [...new Set(slices.flatMap((s) => Object.keys(s.cpuMsOf)))] as ProcessName[];
  return {
    target: target.id,
    label: target.label,
    concurrency,
    base: summary(base),
    new: summary(next),
    newLower,
    pairs,
    p: signTestP(newLower, pairs),
    splitOf: Object.fromEntries(
      names.map((name) => [name, split(base, next, (s) => s.cpuMsOf[name] ?? 0)]),
    ),
    slices,
  };
}

/** The script each Node process of one build's fleet ran, by process. */
export type Scripts = Partial<Record<ProcessName, string>>;

/** How a run loaded the two builds. */
export interface AgainstSettings {
  /** Slices per build, target and concurrency. */
  slices: number;
  sliceS: number;
  warmupS: number;
  concurrency: number[];
  targets: string[];
  gc: boolean;
  /** A target loaded on the same build during every slice, unmeasured (`--alongside`). */
  alongside?: { target: string; concurrency: number };
}

/** The names of the migrations a build's databases were migrated with, by service. */
export type MigrationNames = Record<string, string[]>;

/** What the report says of the two builds. */
export interface AgainstRun {
  version: 1;
  date: string;
  base: { ref: string; commit: string; scripts: Scripts; migrations: MigrationNames };
  new: {
    commit: string;
    uncommittedChanges: boolean;
    scripts: Scripts;
    migrations: MigrationNames;
  };
  settings: AgainstSettings;
  machine: { cores: number; cpuModel: string; node: string };
  comparisons: Comparison[];
  wallS: number;
}

const fixed = (value: number, digits: number) =>
  Number.isFinite(value) ? value.toFixed(digits) : "–";

function change(before: number, after: number): string {
  const percent = (100 * (after - before)) / before;
  if (!(before > 0) || !Number.isFinite(percent)) return "–";
  const text = fixed(Math.abs(percent), 1);
  return text === "0.0" ? "0.0%" : `${percent > 0 ? "+" : "−"}${text}%`;
}

/** Whether the builds' schemas differ, and where: the migrations only one of them has. */
function schemaLine(run: AgainstRun): string {
  const services = [
    ...new Set([...Object.keys(run.base.migrations), ...Object.keys(run.new.migrations)]),
  ];
  const differences = services.flatMap((service) => {
    const [base, next] = [run.base.migrations[service] ?? [], run.new.migrations[service] ?? []];
    const only = (side: string, names: string[], other: string[]) => {
      const extra = names.filter((name) => !other.includes(name));
      return extra.length > 0
        ? [`${service}: ${extra.map((name) => `\`${name}\``).join(", ")} in ${side} only`]
        : [];
    };
    return [...only("base", base, next), ...only("new", next, base)];
  });
  return differences.length === 0
    ? "Both builds have the same migrations."
    : `Each build's databases were migrated by its own migrations, which differ: ${differences.join("; ")}.`;
}

export function againstReport(run: AgainstRun): string {
  const { settings } = run;
  const newName = `${run.new.commit.slice(0, 7)}${run.new.uncommittedChanges ? " with uncommitted changes" : ""}`;
  const lines = [
    `# Two builds in turns: ${run.base.ref} against this checkout`,
    "",
    `- **base**: \`${run.base.ref}\` (${run.base.commit.slice(0, 7)}); **new**: ${newName}.`,
    `- ${settings.slices} slices of ${settings.sliceS} s per build, target and concurrency, the builds in turns (the first of each pair alternates), after ${settings.warmupS} s of warm-up each; ${run.machine.cores} cores, ${run.machine.cpuModel}, Node ${run.machine.node}; ${fixed(run.wallS, 0)} s in all.`,
    `- ${schemaLine(run)}`,
    ...(settings.alongside
      ? [
          `- During every slice each build also served ${targetById(settings.alongside.target).label} at c=${settings.alongside.concurrency}, unmeasured, from half a second before the slice to half a second after it: read the latency and calls a second; CPU per call includes that load.`,
        ]
      : []),
    "- CPU is per successful call, summed over the processes on the target's path, from /proc; each figure is the median of its slices.",
    "- **lower in** counts the pairs in which the new build spent less CPU per call; **p** is the two-sided sign test's chance of so uneven a split between two equal builds.",
    "",
    "## CPU per call",
    "",
    "| target | c | base ms | new ms | change | lower in | p | base calls/s | new calls/s | base p50 ms | new p50 ms | base p99 ms | new p99 ms |",
    "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
  ];
  for (const c of run.comparisons) {
    lines.push(
      `| ${c.label} | ${c.concurrency} | ${fixed(c.base.cpuMs, 4)} | ${fixed(c.new.cpuMs, 4)} | ${change(c.base.cpuMs, c.new.cpuMs)} | ${c.newLower} of ${c.pairs} | ${fixed(c.p, 3)} | ${fixed(c.base.rps, 0)} | ${fixed(c.new.rps, 0)} | ${fixed(c.base.p50Ms, 2)} | ${fixed(c.new.p50Ms, 2)} | ${fixed(c.base.p99Ms, 2)} | ${fixed(c.new.p99Ms, 2)} |`,
    );
  }
  lines.push("", "## Per process", "");
  lines.push("| target | c | process | base ms | new ms | change | lower in | p |");
  lines.push("|---|---:|---|---:|---:|---:|---:|---:|");
  for (const c of run.comparisons) {
    for (const [name, ms] of Object.entries(c.base.cpuMsOf)) {
      const after = c.new.cpuMsOf[name as ProcessName] ?? Number.NaN;
      const { newLower, pairs } = c.splitOf[name as ProcessName] ?? { newLower: 0, pairs: 0 };
      lines.push(
        `| ${c.label} | ${c.concurrency} | ${name} | ${fixed(ms, 4)} | ${fixed(after, 4)} | ${change(ms, after)} | ${newLower} of ${pairs} | ${fixed(signTestP(newLower, pairs), 3)} |`,
      );
    }
  }
  if (settings.gc) {
    lines.push("", "## Garbage per call", "", "| target | c | base KB | new KB | change |");
    lines.push("|---|---:|---:|---:|---:|");
    for (const c of run.comparisons) {
      const [before, after] = [c.base.kbPerCall ?? Number.NaN, c.new.kbPerCall ?? Number.NaN];
      lines.push(
        `| ${c.label} | ${c.concurrency} | ${fixed(before, 1)} | ${fixed(after, 1)} | ${change(before, after)} |`,
      );
    }
  }
  const errors = run.comparisons.filter((c) => c.base.errors + c.new.errors > 0);
  if (errors.length > 0) {
    lines.push("", "## Errors", "");
    for (const c of errors) {
      lines.push(`- ${c.label} c=${c.concurrency}: base ${c.base.errors}, new ${c.new.errors}`);
    }
  }
  return `${lines.join("\n")}\n`;
}
