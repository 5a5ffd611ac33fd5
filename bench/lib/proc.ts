// CPU time and memory of processes, read from /proc (Linux only).
import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";

/** Clock ticks per second, the unit of utime/stime in /proc/<pid>/stat. */
const CLK_TCK = (() => {
  try {
    return Number(execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim()) || 100;
  } catch {
    return 100;
  }
})();

export interface ProcSample {
  /** User + system CPU seconds since the process started (all threads). */
  cpuS: number;
  /** For sampleTree: the CPU seconds of the parent (`self`) and of each child, by pid. */
  parts?: { self: number; children: Map<number, number> };
  /** Peak resident set size since start or since the last resetPeak, in KiB (VmHWM). */
  peakRssKb: number;
  /** Resident set size now, in KiB (VmRSS). */
  rssKb: number;
  /**
   * The part of rssKb that is the process's own memory (RssAnon: heaps, stacks); the rest is
   * pages of files it maps (the node executable, shared libraries), which processes of one
   * image share and the kernel may drop.
   */
  anonRssKb: number;
}

/** One process's counters; undefined once it has exited. */
export function sampleProcess(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    // Fields after the command name, which is in parentheses and may contain spaces: the first
    // is field 3 (state), so utime (14) and stime (15) are at 11 and 12.
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const ticks = Number(fields[11]) + Number(fields[12]);
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const kb = (key: string) =>
      Number(new RegExp(`^${key}:\\s+(\\d+)`, "m").exec(status)?.[1] ?? 0);
    return {
      cpuS: ticks / CLK_TCK,
      peakRssKb: kb("VmHWM"),
      rssKb: kb("VmRSS"),
      anonRssKb: kb("RssAnon"),
    };
  } catch {
    return undefined;
  }
}

/**
 * CPU seconds of a process of one thread, in nanoseconds' precision (`/proc/<pid>/schedstat`):
 * a PostgreSQL backend serving a few short reads spends less than one clock tick of /stat.
 */
function threadCpuS(pid: number): number | undefined {
  try {
    const ns = Number(readFileSync(`/proc/${pid}/schedstat`, "utf8").split(" ")[0]);
    return Number.isFinite(ns) ? ns / 1e9 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A process and its children (PostgreSQL's server and its process per connection, each of one
 * thread): CPU of all of them, memory of the parent. cpuDelta() takes the difference child by
 * child.
 */
export function sampleTree(pid: number): ProcSample | undefined {
  const root = sampleProcess(pid);
  if (!root) return undefined;
  const children = new Map<number, number>();
  try {
    for (const child of readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").split(/\s+/)) {
      const cpuS = child ? threadCpuS(Number(child)) : undefined;
      if (cpuS !== undefined) children.set(Number(child), cpuS);
    }
  } catch {}
  const self = threadCpuS(pid) ?? root.cpuS;
  const cpuS = [...children.values()].reduce((sum, child) => sum + child, self);
  return { ...root, cpuS, parts: { self, children } };
}

/**
 * CPU seconds between two samples of one process, or of one tree: there, a child that started
 * in between counts from zero and one that exited counts not at all (its time left with it).
 */
export function cpuDelta(before: ProcSample, after: ProcSample): number {
  if (!before.parts || !after.parts) return Math.max(0, after.cpuS - before.cpuS);
  let delta = after.parts.self - before.parts.self;
  for (const [pid, cpuS] of after.parts.children) {
    delta += cpuS - (before.parts.children.get(pid) ?? 0);
  }
  return Math.max(0, delta);
}

/**
 * Resets VmHWM to the current RSS (`echo 5 > /proc/<pid>/clear_refs`, Linux 4.0+), so the next
 * sample's peak covers only what happened since. False when the kernel refuses.
 */
export function resetPeak(pid: number): boolean {
  try {
    writeFileSync(`/proc/${pid}/clear_refs`, "5");
    return true;
  } catch {
    return false;
  }
}

export interface MachineSample {
  /** Jiffies the CPUs spent busy (everything but idle and iowait), summed over cores. */
  busy: number;
  /**
   * Jiffies the hypervisor ran something else while a CPU of this machine had work (steal),
   * summed over cores; part of `busy`. On a virtual machine, CPU per call can rise with it.
   */
  steal: number;
  total: number;
}

/** The machine's aggregate CPU counters (first line of /proc/stat). */
export function sampleMachine(): MachineSample {
  const line = readFileSync("/proc/stat", "utf8").split("\n", 1)[0] ?? "";
  const values = line.trim().split(/\s+/).slice(1, 9).map(Number);
  const total = values.reduce((sum, value) => sum + value, 0);
  const idle = (values[3] ?? 0) + (values[4] ?? 0);
  return { busy: total - idle, steal: values[7] ?? 0, total };
}

/** CPU seconds the machine spent busy, and of that stolen, between two samples, over all cores. */
export function machineSeconds(
  before: MachineSample,
  after: MachineSample,
): { busyS: number; stealS: number } {
  return {
    busyS: (after.busy - before.busy) / CLK_TCK,
    stealS: (after.steal - before.steal) / CLK_TCK,
  };
}

/**
 * Polls a short-lived process (the load generator) so its CPU time is known after it exits;
 * the last poll is at most `intervalMs` before the exit.
 */
export function pollProcess(pid: number, intervalMs = 100): { stop(): ProcSample | undefined } {
  let last = sampleProcess(pid);
  const timer = setInterval(() => {
    last = sampleProcess(pid) ?? last;
  }, intervalMs);
  return {
    stop() {
      clearInterval(timer);
      return last;
    },
  };
}

/** The script a Node process runs (the first argument naming a .js, .mjs or .ts file). */
export function scriptOf(pid: number): string | undefined {
  try {
    const args = readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
    return args.find((arg) => /\.(m?js|ts)$/.test(arg));
  } catch {
    return undefined;
  }
}
