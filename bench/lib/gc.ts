// Garbage collection of the processes the bench started, from the totals each keeps with
// bench/gc-stats.mjs preloaded (--gc).
import { readFileSync } from "node:fs";
import path from "node:path";

/** One process's garbage collection, since it started or over a run. */
export interface GcTotals {
  /** Collections of any kind. */
  collections: number;
  /** Of them, full mark-compacts of the whole heap. */
  major: number;
  /** Their time on the main thread, ms (V8's helper threads work beside it). */
  pauseMs: number;
  /** Bytes allocated on V8's heap, from its used size before and after each collection. */
  allocatedBytes: number;
}

/** The totals process `pid` last wrote into `dir`; undefined without one (not a Node process). */
export function readGcTotals(dir: string, pid: number): GcTotals | undefined {
  try {
    return JSON.parse(readFileSync(path.join(dir, `${pid}.json`), "utf8")) as GcTotals;
  } catch {
    return undefined;
  }
}

/** What happened between two readings of one process. */
export function gcDelta(before: GcTotals, after: GcTotals): GcTotals {
  return {
    collections: after.collections - before.collections,
    major: after.major - before.major,
    pauseMs: after.pauseMs - before.pauseMs,
    allocatedBytes: after.allocatedBytes - before.allocatedBytes,
  };
}
