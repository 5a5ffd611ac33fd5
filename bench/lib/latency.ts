// Where one call's time goes: the spans of many traces of the same rpc, each step's median.
import type { ReceivedSpan } from "../../test/helpers/otlp.js";
import { median } from "./stats.js";

/** One step of the call: a span that every (or almost every) trace has. */
export interface Step {
  /** The process whose span it is. */
  service: string;
  /** The span's name, e.g. `saga.reserve` or `shop.user.v1.UserService/GetUser`. */
  name: string;
  kind: "server" | "client" | "internal";
  /** How deep below the root: 0 for the root. */
  depth: number;
  /** Median duration over the traces that have it, ms. */
  medianMs: number;
  /** How many of the traces have it. */
  traces: number;
  /**
   * For a client span: the median of its duration less that of the server span it caused, ms:
   * the time a call spends in the two grpc-js ends, the kit around them, and the kernel.
   */
  outsideServerMs?: number;
}

export interface Breakdown {
  /** Traces whose root is the server span of `rootName` in `rootService`. */
  traces: number;
  rootMedianMs: number;
  steps: Step[];
  /**
   * Median, per trace, of the time the root service's own transactions ran while one of its
   * calls was in flight: work done alongside a call, off the path the caller waits on.
   */
  ownAlongsideCallsMs: number;
}

/** One profile's run, as the report's JSON holds it. */
export interface LatencyRun {
  fleet: "plaintext" | "tls";
  title: string;
  ghzP50Ms: number;
  calls: number;
  breakdown: Breakdown;
}

const durationMs = (span: ReceivedSpan) =>
  Number(BigInt(span.endTimeUnixNano) - BigInt(span.startTimeUnixNano)) / 1e6;

/** How long two spans ran at the same time, ms. */
function overlapMs(a: ReceivedSpan, b: ReceivedSpan): number {
  const start = BigInt(a.startTimeUnixNano) > BigInt(b.startTimeUnixNano) ? a : b;
  const end = BigInt(a.endTimeUnixNano) < BigInt(b.endTimeUnixNano) ? a : b;
  const gap = BigInt(end.endTimeUnixNano) - BigInt(start.startTimeUnixNano);
  return gap > 0n ? Number(gap) / 1e6 : 0;
}

/** A database transaction's span name (kit/db/tracing.ts names them `transaction <first statement>`). */
export const isTransaction = (spanName: string) => spanName.startsWith("transaction ");

const KINDS: Record<string, Step["kind"]> = {
  SPAN_KIND_SERVER: "server",
  SPAN_KIND_CLIENT: "client",
};

/** `items` grouped by `key`, each group in the items' order. */
function groupBy<T>(items: readonly T[], key: (item: T) => string): Map<string, T[]> {
  const groups = new Map<string, T[]>();
  for (const item of items) {
    const group = groups.get(key(item));
    if (group) group.push(item);
    else groups.set(key(item), [item]);
  }
  return groups;
}

/**
 * The steps of every trace rooted at a server span `rootName` in `rootService`, in the order a
 * trace runs them (siblings by start time), with their median durations. A step is a span's
 * service, name and place in the tree; the same name twice under one parent (two transactions)
 * is two steps.
 */
export function breakdown(
  spans: readonly ReceivedSpan[],
  rootService: string,
  rootName: string,
): Breakdown {
  interface Sample {
    step: Omit<Step, "medianMs" | "traces" | "outsideServerMs">;
    durations: number[];
    outside: number[];
  }
  const samples = new Map<string, Sample>();
  const roots: number[] = [];
  const alongside: number[] = [];
  for (const trace of groupBy(spans, (span) => span.traceId).values()) {
    const root = trace.find(
      (span) =>
        span.service === rootService &&
        span.name === rootName &&
        span.kind === "SPAN_KIND_SERVER" &&
        !trace.some((other) => other.spanId === span.parentSpanId),
    );
    if (!root) continue;
    roots.push(durationMs(root));
    const own = trace.filter((span) => span.service === rootService);
    const calls = own.filter((span) => span.kind === "SPAN_KIND_CLIENT");
    alongside.push(
      own
        .filter((span) => isTransaction(span.name))
        .reduce((sum, tx) => sum + calls.reduce((s, call) => s + overlapMs(tx, call), 0), 0),
    );
    const children = groupBy(trace, (span) => span.parentSpanId);
    const visit = (span: ReceivedSpan, key: string, depth: number) => {
      let sample = samples.get(key);
      if (!sample) {
        const kind = KINDS[span.kind] ?? "internal";
        sample = {
          step: { service: span.service, name: span.name, kind, depth },
          durations: [],
          outside: [],
        };
        // Map keeps insertion order: the first trace's walk puts the steps in tree order.
        samples.set(key, sample);
      }
      sample.durations.push(durationMs(span));
      const below = (children.get(span.spanId) ?? []).sort((a, b) => {
        const gap = BigInt(a.startTimeUnixNano) - BigInt(b.startTimeUnixNano);
        return gap < 0n ? -1 : gap > 0n ? 1 : 0;
      });
      const served = below.find((child) => child.kind === "SPAN_KIND_SERVER");
      if (span.kind === "SPAN_KIND_CLIENT" && served) {
        sample.outside.push(durationMs(span) - durationMs(served));
      }
      const seen = new Map<string, number>();
      for (const child of below) {
        const name = `${child.service}/${child.name}`;
        const n = (seen.get(name) ?? 0) + 1;
        seen.set(name, n);
        visit(child, `${key} > ${name}#${n}`, depth + 1);
      }
    };
    visit(root, `${root.service}/${root.name}`, 0);
  }
  const steps = [...samples.values()]
    // Steps most traces share; a retry or a rare branch is not the common path.
    .filter((sample) => sample.durations.length >= roots.length / 2)
    .map((sample) => ({
      ...sample.step,
      medianMs: median(sample.durations),
      traces: sample.durations.length,
      ...(sample.outside.length > 0 && { outsideServerMs: median(sample.outside) }),
    }));
  return {
    traces: roots.length,
    rootMedianMs: median(roots),
    steps,
    ownAlongsideCallsMs: alongside.length > 0 ? median(alongside) : 0,
  };
}
