// compactHeap gives back the young generation that allocation grew, under the image's Node
// options; without --expose-gc it does nothing. Each case runs in a process of its own.
import test from "ava";
import { NODE_OPTIONS } from "../deploy/settings.js";
import { exec } from "../test/helpers/exec.js";

const HEAP = new URL("./heap.ts", import.meta.url).href;

/**
 * Runs `lines` in a process of its own with Node's `flags`, after a prelude that imports kit/heap.ts
 * and defines `young()`, the young generation's committed size; returns what it printed as JSON.
 */
async function runWithHeap<T>(flags: readonly string[], lines: string[]): Promise<T> {
  const script = [
    `import v8 from "node:v8";`,
    `const { compactHeap, compactWhenQuiet } = await import(${JSON.stringify(HEAP)});`,
    `const young = () => v8.getHeapSpaceStatistics().find((s) => s.space_name === "new_space").space_size;`,
    ...lines,
  ].join("\n");
  const result = await exec(process.execPath, [
    ...flags,
    ...["--import", "tsx", "--input-type=module", "-e", script],
  ]);
  if (result.code !== 0) throw new Error(result.stderr);
  return JSON.parse(result.stdout) as T;
}

/** The young generation's committed size before and after compactHeap, once allocation grew it. */
function compactIn(flags: string[]) {
  return runWithHeap<{ before: number; after: number; ms: number | null }>(flags, [
    // Objects that live through a few scavenges, as start-up's do, make V8 grow the young generation.
    `let kept = [];`,
    `for (let i = 0; i < 300000; i++) { kept.push({ i, s: "x" + i }); if (kept.length > 50000) kept = kept.slice(10000); }`,
    `kept = undefined;`,
    `const before = young();`,
    `const ms = compactHeap();`,
    `console.log(JSON.stringify({ before, after: young(), ms: ms ?? null }));`,
  ]);
}

test("with the image's Node options, compactHeap shrinks the young generation", async (t) => {
  const flags = NODE_OPTIONS.split(" ");
  t.true(flags.includes("--expose-gc"), NODE_OPTIONS);
  const { before, after, ms } = await compactIn(flags);
  t.true(before >= 4 * 2 ** 20, `young generation before: ${before} bytes`);
  t.true(after <= before / 2, `young generation ${before} → ${after} bytes`);
  t.true(ms !== null && ms >= 0);
});

test("without --expose-gc, compactHeap does nothing and says so", async (t) => {
  const flags = NODE_OPTIONS.split(" ").filter((flag) => flag !== "--expose-gc");
  const { before, after, ms } = await compactIn(flags);
  t.is(ms, null);
  t.is(after, before);
});

test("compactWhenQuiet compacts once the process has gone quiet after work, not during it", async (t) => {
  const run = await runWithHeap<{
    workEnded: number;
    youngAfterWork: number;
    youngNow: number;
    events: { at: number; ms: number; heapBefore: number; heapAfter: number }[];
  }>(NODE_OPTIONS.split(" "), [
    `const events = [];`,
    `const stop = compactWhenQuiet({ everyMs: 200, quietBelow: 0.1, growthBytes: 2 ** 20,`,
    `  onCompact: (c) => events.push({ at: performance.now(), ...c }) });`,
    // Work for 1.5 s in 20 ms slices, so that the timer runs during it: objects that live through a
    // few scavenges, as calls in flight do.
    `let kept = [];`,
    `const busyUntil = performance.now() + 1500;`,
    `while (performance.now() < busyUntil) {`,
    `  const slice = performance.now() + 20;`,
    `  while (performance.now() < slice) { kept.push({ s: "x" + kept.length }); if (kept.length > 50000) kept = kept.slice(10000); }`,
    `  await new Promise((resolve) => setImmediate(resolve));`,
    `}`,
    `kept = undefined;`,
    `const workEnded = performance.now();`,
    `const youngAfterWork = young();`,
    `await new Promise((resolve) => setTimeout(resolve, 1000));`,
    `stop();`,
    `console.log(JSON.stringify({ workEnded, youngAfterWork, youngNow: young(), events }));`,
  ]);
  t.is(run.events.length, 1, JSON.stringify(run.events));
  const [compaction] = run.events;
  t.true((compaction?.at ?? 0) > run.workEnded, "not while the loop was busy");
  t.true((compaction?.heapAfter ?? 0) < (compaction?.heapBefore ?? 0));
  t.true(run.youngNow <= run.youngAfterWork / 2, `young ${run.youngAfterWork} → ${run.youngNow}`);
});
