// Where a process allocates, for `npm run bench -- --profile`: V8's sampling heap profiler,
// counting objects the collector has already freed too, so the profile shows every byte a call
// allocates, not only what stays alive. Preloaded into the services with
//
//   NODE_OPTIONS="--import <repo>/bench/heap-prof.mjs"  BENCH_HEAP_PROF_DIR=DIR
//
// Sampling starts at the first SIGUSR2 (the start of the measured load), so start-up and
// warm-up stay out, and the profile goes to DIR/<pid>.heapprofile as the process exits.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import path from "node:path";
import { isMainThread } from "node:worker_threads";

const dir = process.env.BENCH_HEAP_PROF_DIR;
if (dir && isMainThread) {
  const session = new Session();
  session.connect();
  let sampling = false;
  process.on("SIGUSR2", () => {
    if (sampling) return;
    sampling = true;
    session.post("HeapProfiler.startSampling", {
      // One sample per 16 KB allocated, on average: about a dozen per CreateOrder in order.
      samplingInterval: 16 * 1024,
      includeObjectsCollectedByMajorGC: true,
      includeObjectsCollectedByMinorGC: true,
    });
  });
  // A session on the main thread answers synchronously, so this works inside 'exit'.
  process.once("exit", () => {
    if (!sampling) return;
    session.post("HeapProfiler.stopSampling", (error, result) => {
      if (error) return;
      writeFileSync(path.join(dir, `${process.pid}.heapprofile`), JSON.stringify(result.profile));
    });
  });
}
