// V8 keeps the young generation at the size start-up grew it to, and an idle Node process never
// gives it back: V8's memory reducer judges idleness by the allocation it measured at its last
// collections, and a process that has gone quiet collects nothing more. So a service compacts
// its heap once, as it begins to serve, when its runtime lets it (`--expose-gc`, in the image's
// NODE_OPTIONS: deploy/settings.ts).

type Gc = (options: { type: "major"; execution: "sync"; flavor: "last-resort" }) => void;

/**
 * One full, memory-reducing collection (V8's last-resort flavour: the young generation shrunk,
 * free pages returned). Returns how long it took in ms, or undefined without `--expose-gc`.
 */
export function compactHeap(): number | undefined {
  const gc = (globalThis as { gc?: Gc }).gc;
  if (!gc) return undefined;
  const started = performance.now();
  gc({ type: "major", execution: "sync", flavor: "last-resort" });
  return performance.now() - started;
}
