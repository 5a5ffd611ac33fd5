// V8 keeps the young generation at the size a burst of allocation grew it to, and an idle Node
// process never gives it back: V8's memory reducer judges idleness by the allocation rate it
// measured at its last collections, and a process that has gone quiet collects nothing more, so
// it keeps reading a busy one. So a service compacts its heap itself: once just before its port
// opens, and again whenever it has gone quiet after work. Both need `--expose-gc` (in the image's
// NODE_OPTIONS: deploy/settings.ts); without it they do nothing.
import { performance } from "node:perf_hooks";
import v8 from "node:v8";

type Gc = (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;

const gcOf = () => (globalThis as { gc?: Gc }).gc;

/** Whether this process can compact its heap: node runs with `--expose-gc`. */
export const canCompactHeap = () => gcOf() !== undefined;

/**
 * One full, memory-reducing collection (V8's last-resort flavour: the young generation shrunk,
 * free pages returned). Returns how long it took in ms, or undefined without `--expose-gc`.
 */
export function compactHeap(): number | undefined {
  const gc = gcOf();
  if (!gc) return undefined;
  const started = performance.now();
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  return performance.now() - started;
}

export interface QuietCompaction {
  /** How often to look; a compaction needs a whole period this quiet. */
  everyMs: number;
  /** The event loop's busy share over the period below which the process counts as quiet. */
  quietBelow: number;
  /** How far V8's heap must have grown since the last compaction for another to be worth it. */
  growthBytes: number;
  /** Told of each compaction. */
  onCompact?: (compaction: { ms: number; heapBefore: number; heapAfter: number }) => void;
}

/** V8's heap, committed: what a compaction can give back. */
const heapSize = () => v8.getHeapStatistics().total_heap_size;

/**
 * Compacts the heap at the end of every period in which the event loop was quiet and the heap had
 * grown since the last compaction: after a burst of calls, not during one. Returns a stop
 * function; the timer never keeps the process alive.
 */
export function compactWhenQuiet(options: QuietCompaction): () => void {
  if (!gcOf()) return () => {};
  let compacted = heapSize();
  let last = performance.eventLoopUtilization();
  const timer = setInterval(() => {
    const period = performance.eventLoopUtilization(last);
    last = performance.eventLoopUtilization();
    const before = heapSize();
    if (period.utilization >= options.quietBelow || before - compacted < options.growthBytes) {
      return;
    }
    const ms = compactHeap() as number;
    compacted = heapSize();
    // The compaction's own time is not the callers' work.
    last = performance.eventLoopUtilization();
    options.onCompact?.({ ms, heapBefore: before, heapAfter: compacted });
  }, options.everyMs);
  timer.unref();
  return () => clearInterval(timer);
}
