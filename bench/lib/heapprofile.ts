// Reads V8 sampling heap profiles (bench/heap-prof.mjs): the bytes a process allocated, by the
// allocating function and its package, by the code that asked for them, and inclusive of
// callees. Frames are read back through the build's source maps, as for the CPU profiles.
import { type CallFrame, frameKey, originalFrame, packageOf } from "./cpuprofile.js";

interface HeapNode {
  callFrame: CallFrame;
  /** Bytes allocated in this frame itself, as V8 estimates them from its samples. */
  selfSize: number;
  children: HeapNode[];
}

export interface HeapProfile {
  head: HeapNode;
}

export interface HeapSummary {
  totalBytes: number;
  /** By the package of the frame that allocated. */
  packages: [string, number][];
  /**
   * By the innermost package on the stack that is neither Node's own code nor V8's: what a
   * Promise, a Map or a stream's bookkeeping was made for. Allocations with no such frame stay
   * Node's or V8's.
   */
  askedBy: [string, number][];
  self: [string, number][];
  inclusive: [string, number][];
}

const RUNTIME = new Set(["(native / V8)", "node: (internals)"]);

export function summarizeHeap(profile: HeapProfile): HeapSummary {
  const self = new Map<string, number>();
  const inclusive = new Map<string, number>();
  const packages = new Map<string, number>();
  const askedBy = new Map<string, number>();
  const add = (map: Map<string, number>, key: string, bytes: number) =>
    map.set(key, (map.get(key) ?? 0) + bytes);
  let totalBytes = 0;

  // The stack of frames above the node, as [key, package] pairs, innermost last.
  const walk = (node: HeapNode, stack: [string, string][]): number => {
    const frame = originalFrame(node.callFrame);
    const pkg = packageOf(frame.url);
    const key = frameKey(frame);
    const root = node.callFrame.functionName === "(root)";
    const here: [string, string][] = root ? stack : [...stack, [key, pkg]];
    let bytes = node.selfSize;
    if (node.selfSize > 0) {
      totalBytes += node.selfSize;
      add(self, key, node.selfSize);
      add(packages, pkg, node.selfSize);
      const asker = here.findLast(([, p]) => !RUNTIME.has(p))?.[1] ?? pkg;
      add(askedBy, asker, node.selfSize);
    }
    for (const child of node.children) bytes += walk(child, here);
    // A function once per stack, however often it recurs on it.
    if (!root && !stack.some(([k]) => k === key)) add(inclusive, key, bytes);
    return bytes;
  };
  walk(profile.head, []);

  const sorted = (map: Map<string, number>) => [...map].sort((a, b) => b[1] - a[1]);
  return {
    totalBytes,
    packages: sorted(packages),
    askedBy: sorted(askedBy),
    self: sorted(self),
    inclusive: sorted(inclusive),
  };
}

/** The summary as text, each row in KB per call and as a share of all bytes. */
export function formatHeapSummary(summary: HeapSummary, calls: number, top: number): string[] {
  const total = Math.max(1, summary.totalBytes);
  const perCall = (bytes: number) => bytes / 1024 / Math.max(1, calls);
  const rows = (list: [string, number][]) =>
    list
      .slice(0, top)
      .map(
        ([key, bytes]) =>
          `  ${((100 * bytes) / total).toFixed(1).padStart(5)}% ${perCall(bytes).toFixed(2).padStart(7)} KB  ${key}`,
      );
  return [
    `   ${(summary.totalBytes / 1024 / 1024).toFixed(1)} MB allocated over ${calls} calls: ${perCall(summary.totalBytes).toFixed(1)} KB per call`,
    "-- by the code that asked (Node's and V8's own frames charged to the package that called them)",
    ...rows(summary.askedBy),
    "-- by the package of the allocating frame",
    ...rows(summary.packages),
    "-- by allocating function",
    ...rows(summary.self),
    "-- total (inclusive) by function",
    ...rows(summary.inclusive),
  ];
}
