// Memory over a long run: RSS of every process on a target's path after N calls and after N more,
// and once more after the calls have stopped for a while (a service compacts its heap once its
// calls quieten: kit/heap.ts).
import { setTimeout as sleep } from "node:timers/promises";
import { runLoad } from "./ghz.js";
import { sampleProcess } from "./proc.js";
import type { ProcessName, Target, TargetContext } from "./targets.js";

export interface SoakResult {
  target: string;
  /** Calls per half. */
  calls: number;
  concurrency: number;
  /** Failed calls over both halves. */
  errors: number;
  /** Their status codes and messages with their counts, as ghz reports them. */
  errorSamples?: Record<string, number>;
  /** How long the processes went without calls before `quiet` was read; 0 when it was not. */
  quietS?: number;
  /**
   * RSS (VmRSS) of each process after the first and after the second half, the anonymous part of
   * the second (see ProcSample.anonRssKb), and after `quietS` seconds without calls, MiB.
   */
  rssMb: Partial<
    Record<ProcessName, { first: number; second: number; secondAnon: number; quiet?: number }>
  >;
}

/** Two runs of `calls` calls each on `target`, RSS read after each, and after `quietS` without. */
export async function soak(
  target: Target,
  context: TargetContext,
  pids: Map<ProcessName, number>,
  options: {
    calls: number;
    concurrency: number;
    quietS: number;
    ghz: string;
    outFile: string;
    cpus: number;
  },
): Promise<SoakResult> {
  const readMemory = () =>
    new Map(target.path.map((name) => [name, sampleProcess(pids.get(name) ?? -1)]));
  const mib = (kb: number | undefined) => (kb ?? 0) / 1024;
  let errors = 0;
  const errorSamples: Record<string, number> = {};
  const halves: ReturnType<typeof readMemory>[] = [];
  for (let half = 0; half < 2; half++) {
    const load = await runLoad(target.call(context), {
      ghz: options.ghz,
      address: context.addresses[target.entry] as string,
      concurrency: options.concurrency,
      durationS: 0,
      total: options.calls,
      outFile: options.outFile,
      cpus: options.cpus,
    });
    errors += load.errors;
    for (const [sample, count] of Object.entries(load.errorSamples)) {
      errorSamples[sample] = (errorSamples[sample] ?? 0) + count;
    }
    halves.push(readMemory());
  }
  const [first, second] = halves as [ReturnType<typeof readMemory>, ReturnType<typeof readMemory>];
  let quiet: ReturnType<typeof readMemory> | undefined;
  if (options.quietS > 0) {
    await sleep(options.quietS * 1000);
    quiet = readMemory();
  }
  return {
    target: target.id,
    calls: options.calls,
    concurrency: options.concurrency,
    errors,
    errorSamples,
    quietS: options.quietS,
    rssMb: Object.fromEntries(
      target.path.map((name) => [
        name,
        {
          first: mib(first.get(name)?.rssKb),
          second: mib(second.get(name)?.rssKb),
          secondAnon: mib(second.get(name)?.anonRssKb),
          ...(quiet && { quiet: mib(quiet.get(name)?.rssKb) }),
        },
      ]),
    ),
  };
}
