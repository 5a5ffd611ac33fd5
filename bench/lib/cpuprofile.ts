// Reads V8 .cpuprofile files (node --cpu-prof, bench/cpu-prof.mjs): self time by function and
// by package, and inclusive time by function. Frames in the bundled build (dist/, npm run build)
// are read back through its source maps, so they name the original files and functions.
import { existsSync, readFileSync } from "node:fs";
import { SourceMap } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

export interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
  columnNumber?: number;
}

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

const sourceMaps = new Map<string, SourceMap | undefined>();

function sourceMapOf(url: string): SourceMap | undefined {
  if (!sourceMaps.has(url)) {
    const file = url.startsWith("file://") ? fileURLToPath(url) : "";
    const map = `${file}.map`;
    sourceMaps.set(
      url,
      file && existsSync(map) ? new SourceMap(JSON.parse(readFileSync(map, "utf8"))) : undefined,
    );
  }
  return sourceMaps.get(url);
}

/** The frame as the sources name it, when its file has a source map beside it. */
export function originalFrame(frame: CallFrame): CallFrame {
  const map = frame.url ? sourceMapOf(frame.url) : undefined;
  if (!map) return frame;
  const entry = map.findEntry(frame.lineNumber, frame.columnNumber ?? 0);
  if (!("originalSource" in entry)) return frame;
  const source = entry.originalSource.startsWith("file://")
    ? entry.originalSource
    : path.resolve(path.dirname(fileURLToPath(frame.url)), entry.originalSource);
  return {
    // Node fills in the name the map gives the position (not yet in @types/node).
    functionName: (entry as { name?: string }).name ?? frame.functionName,
    url: source.startsWith("file://") ? source : `file://${source}`,
    lineNumber: entry.originalLine,
  };
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

export interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  /** Microseconds on the monotonic clock that process.hrtime() reads in every process. */
  startTime: number;
  endTime: number;
}

/** `node_modules/<pkg>` for a dependency, `node:…` for Node's own code, else the repo path. */
export function packageOf(url: string): string {
  if (url === "") return "(native / V8)";
  if (url.startsWith("node:")) return "node: (internals)";
  const modules = url.lastIndexOf("node_modules/");
  if (modules >= 0) {
    const rest = url.slice(modules + "node_modules/".length).split("/");
    return rest[0]?.startsWith("@") ? `${rest[0]}/${rest[1]}` : (rest[0] ?? url);
  }
  const file = url.replace(/^file:\/\//, "");
  return file.startsWith(repoRoot) ? file.slice(repoRoot.length) : path.basename(file);
}

/** The file of a frame, short: `sqlite3/lib/sqlite3.js`, `kit/server.ts`, `node:events`. */
function fileOf(url: string): string {
  if (url === "" || url.startsWith("node:")) return url;
  const modules = url.lastIndexOf("node_modules/");
  if (modules >= 0) return url.slice(modules + "node_modules/".length);
  return packageOf(url);
}

/** A frame as the summaries name it: `run kit/db/sql.ts:123`. */
export const frameKey = (frame: CallFrame) =>
  `${frame.functionName || "(anonymous)"} ${frame.url ? `${fileOf(frame.url)}:${frame.lineNumber + 1}` : ""}`.trim();

export interface ProfileSummary {
  totalMs: number;
  /** Time in (idle) and (program)/(garbage collector), which belong to no function. */
  idleMs: number;
  self: [string, number][];
  inclusive: [string, number][];
  packages: [string, number][];
}

/**
 * The samples taken from `fromUs` until `untilUs` (the profile's clock; process.hrtime.bigint()
 * / 1000n in any process reads the same one), by function and by package.
 */
export function summarize(
  profile: CpuProfile,
  fromUs = profile.startTime,
  untilUs = profile.endTime,
): ProfileSummary {
  const byId = new Map(profile.nodes.map((node) => [node.id, node]));
  const parent = new Map<number, number>();
  for (const node of profile.nodes)
    for (const child of node.children ?? []) parent.set(child, node.id);
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const packages = new Map<string, number>();
  let totalMs = 0;
  let idleMs = 0;
  let at = profile.startTime;
  profile.samples.forEach((id, i) => {
    const delta = profile.timeDeltas[i] ?? 0;
    at += delta;
    const ms = delta / 1000;
    const node = byId.get(id);
    if (!node || at < fromUs || at > untilUs) return;
    totalMs += ms;
    if (node.callFrame.functionName === "(idle)") {
      idleMs += ms;
      return;
    }
    const frame = originalFrame(node.callFrame);
    const key = frameKey(frame);
    self.set(key, (self.get(key) ?? 0) + ms);
    const pkg = packageOf(frame.url);
    packages.set(pkg, (packages.get(pkg) ?? 0) + ms);
    // Each function once per sample, however often it recurs on the stack.
    const seen = new Set<string>();
    for (let at: number | undefined = id; at !== undefined; at = parent.get(at)) {
      const frame = byId.get(at)?.callFrame;
      if (!frame || frame.functionName === "(root)") continue;
      const k = frameKey(originalFrame(frame));
      if (seen.has(k)) continue;
      seen.add(k);
      inclusive.set(k, (inclusive.get(k) ?? 0) + ms);
    }
  });
  const sorted = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1]);
  return {
    totalMs,
    idleMs,
    self: sorted(self),
    inclusive: sorted(inclusive),
    packages: sorted(packages),
  };
}

/** The summary as text: the `top` packages and functions by self time, and by inclusive time. */
export function formatSummary(summary: ProfileSummary, top: number): string[] {
  const busy = summary.totalMs - summary.idleMs;
  const pct = (ms: number) => `${((100 * ms) / Math.max(1, busy)).toFixed(1).padStart(5)}%`;
  const rows = (list: [string, number][]) =>
    list.slice(0, top).map(([key, ms]) => `  ${pct(ms)} ${ms.toFixed(0).padStart(7)} ms  ${key}`);
  return [
    `   ${summary.totalMs.toFixed(0)} ms sampled, ${busy.toFixed(0)} ms busy (percentages are of busy time)`,
    "-- self time by package",
    ...rows(summary.packages),
    "-- self time by function",
    ...rows(summary.self),
    "-- total (inclusive) time by function",
    ...rows(summary.inclusive),
  ];
}
