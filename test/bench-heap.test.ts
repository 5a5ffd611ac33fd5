// bench --profile's view of allocations: the preload (bench/heap-prof.mjs) in a real Node
// process, and how bench/lib/heapprofile.ts charges the bytes.
import { mkdtemp, readdir, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { pathToFileURL } from "node:url";
import test from "ava";
import { type HeapProfile, summarizeHeap } from "../bench/lib/heapprofile.js";
import { repoRoot } from "../scripts/lib/launcher.js";
import { exec } from "./helpers/exec.js";

// Each loop allocates 5,000 arrays of 1,000 small integers, 8 bytes each (Node's V8 does not
// compress pointers): about 40 MB.
const SCRIPT = `
  const arrays = () => { let n = 0; for (let i = 0; i < 5000; i++) n += new Array(1000).fill(i).length; return n; };
  function beforeSignal() { return arrays(); }
  function afterSignal() { const n = arrays(); globalThis.gc(); return n; }
  beforeSignal();
  // Listeners run in order: the preload's, which starts sampling, then this one. A signal's
  // listener does not keep the process alive, so a timer waits for it.
  const wait = setTimeout(() => process.exit(3), 10_000);
  process.on("SIGUSR2", () => { afterSignal(); clearTimeout(wait); });
  process.kill(process.pid, "SIGUSR2");
`;

test("the preload samples from SIGUSR2 to exit, garbage already collected included", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-heap-test-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const run = await exec(
    process.execPath,
    [
      "--expose-gc",
      ...["--import", pathToFileURL(path.join(repoRoot, "bench", "heap-prof.mjs")).href],
      ...["--eval", SCRIPT],
    ],
    { env: { BENCH_HEAP_PROF_DIR: dir } },
  );
  t.is(run.code, 0, run.stderr);
  const files = await readdir(dir);
  t.is(files.length, 1, files.join(", "));
  t.regex(files[0] as string, /^\d+\.heapprofile$/);
  const profile = JSON.parse(await readFile(path.join(dir, files[0] as string), "utf8"));
  const summary = summarizeHeap(profile as HeapProfile);
  const bytesOf = (name: string) =>
    summary.inclusive.find(([key]) => key.startsWith(`${name} `))?.[1] ?? 0;

  t.is(bytesOf("beforeSignal"), 0, "allocations before the signal are left out");
  // Collected by the gc() call before the profile was taken, and still counted.
  const after = bytesOf("afterSignal");
  t.true(after > 32e6 && after < 48e6, `afterSignal allocated ${after} bytes, not about 40 MB`);
  t.true(summary.totalBytes >= after);
});

test("bytes go to the innermost package that is neither Node's nor V8's", (t) => {
  const frame = (functionName: string, url: string) => ({ functionName, url, lineNumber: 0 });
  const kit = pathToFileURL(path.join(repoRoot, "kit", "example.ts")).href;
  const profile: HeapProfile = {
    head: {
      callFrame: frame("(root)", ""),
      selfSize: 0,
      children: [
        {
          callFrame: frame("onStreamRead", "node:internal/stream_base_commons"),
          selfSize: 100,
          children: [
            {
              callFrame: frame("handle", kit),
              selfSize: 10,
              children: [
                {
                  callFrame: frame("nextTick", "node:internal/process/task_queues"),
                  selfSize: 0,
                  children: [{ callFrame: frame("Map", ""), selfSize: 1000, children: [] }],
                },
              ],
            },
          ],
        },
      ],
    },
  };
  const summary = summarizeHeap(profile);
  t.is(summary.totalBytes, 1110);
  t.deepEqual(summary.askedBy, [
    ["kit/example.ts", 1010],
    ["node: (internals)", 100],
  ]);
  t.deepEqual(summary.packages, [
    ["(native / V8)", 1000],
    ["node: (internals)", 100],
    ["kit/example.ts", 10],
  ]);
  t.deepEqual(summary.inclusive.slice(0, 2), [
    ["onStreamRead node:internal/stream_base_commons:1", 1110],
    ["handle kit/example.ts:1", 1010],
  ]);
});
