// Garbage collection counted inside a process, for bench/run.ts --gc. The bench starts the
// services and the echo servers with
//
//   NODE_OPTIONS="--import <repo>/bench/gc-stats.mjs"  BENCH_GC_DIR=DIR
//
// and each process keeps DIR/<pid>.json up to date (every 100 ms) with its running totals since
// it started: collections, major ones (mark-compact), their main-thread time, and the bytes it
// allocated on V8's heap. The bench reads the file before and after each measured run.
import { mkdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import { GCProfiler, getHeapStatistics } from "node:v8";
import { isMainThread } from "node:worker_threads";

const dir = process.env.BENCH_GC_DIR;
// Module loader hooks (tsx's, in some layouts) run in a thread of their own that runs this
// preload too; only the main thread may write the process's file.
if (dir && isMainThread) {
  const file = path.join(dir, `${process.pid}.json`);
  const totals = { collections: 0, major: 0, pauseMs: 0, allocatedBytes: 0 };
  // The heap's used size when last seen: what it grew by since then was allocated, up to the
  // next collection, which is where anything is freed.
  let used = getHeapStatistics().used_heap_size;
  mkdirSync(dir, { recursive: true });
  let profiler = new GCProfiler();
  profiler.start();

  const record = () => {
    const { statistics } = profiler.stop();
    profiler = new GCProfiler();
    profiler.start();
    for (const gc of statistics) {
      totals.collections += 1;
      if (gc.gcType === "MarkSweepCompact") totals.major += 1;
      totals.pauseMs += gc.cost / 1000;
      totals.allocatedBytes += Math.max(0, gc.beforeGC.heapStatistics.usedHeapSize - used);
      used = gc.afterGC.heapStatistics.usedHeapSize;
    }
    const now = getHeapStatistics().used_heap_size;
    totals.allocatedBytes += Math.max(0, now - used);
    used = now;
    // Written whole, then renamed, so that a reader never sees half a file. The bench may have
    // removed the folder while the process shuts down: that must not fail the process.
    try {
      writeFileSync(`${file}.tmp`, JSON.stringify(totals));
      renameSync(`${file}.tmp`, file);
    } catch {}
  };
  setInterval(record, 100).unref();
}
