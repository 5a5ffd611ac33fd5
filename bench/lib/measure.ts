// One measured load of a target: its calls, and what every process the bench started spent on
// them (CPU, peak memory, and under --gc garbage collection), with the rest of the machine.
import os from "node:os";
import path from "node:path";
import { tool } from "../../scripts/lib/launcher.js";
import { gcDelta, readGcTotals } from "./gc.js";
import { runLoad } from "./ghz.js";
import type { BenchOptions } from "./options.js";
import {
  cpuDelta,
  machineSeconds,
  type ProcSample,
  resetPeak,
  sampleMachine,
  sampleProcess,
  sampleTree,
} from "./proc.js";
import type { ProcessUsage, RunResult } from "./results.js";
import type { ProcessName, Target, TargetContext } from "./targets.js";

function snapshot(pids: Map<ProcessName, number>): Map<ProcessName, ProcSample | undefined> {
  // PostgreSQL works in a process per connection: the server's CPU is its children's too.
  return new Map(
    [...pids].map(([name, pid]) => [
      name,
      name === "postgres" ? sampleTree(pid) : sampleProcess(pid),
    ]),
  );
}

export async function measure(
  target: Target,
  context: TargetContext,
  concurrency: number,
  durationS: number,
  pids: Map<ProcessName, number>,
  options: Pick<BenchOptions, "ghzCpus">,
  scratch: string,
  gcDir: string | undefined,
): Promise<RunResult> {
  for (const pid of pids.values()) resetPeak(pid);
  const gcOf = (pid: number) => (gcDir ? readGcTotals(gcDir, pid) : undefined);
  const gcBefore = new Map([...pids.values()].map((pid) => [pid, gcOf(pid)]));
  const before = snapshot(pids);
  const machineBefore = sampleMachine();
  const harnessBefore = process.cpuUsage();
  const load = await runLoad(target.call(context), {
    ghz: tool("ghz"),
    address: context.addresses[target.entry] as string,
    concurrency,
    durationS,
    outFile: path.join(scratch, "ghz.json"),
    cpus: options.ghzCpus,
  });
  const harness = process.cpuUsage(harnessBefore);
  const machine = machineSeconds(machineBefore, sampleMachine());
  const after = snapshot(pids);

  const processes: Partial<Record<ProcessName, ProcessUsage>> = {};
  for (const [name, end] of after) {
    const start = before.get(name);
    if (!start || !end) continue;
    const cpuS = cpuDelta(start, end);
    const pid = pids.get(name) as number;
    const [gcStart, gcEnd] = [gcBefore.get(pid), gcOf(pid)];
    processes[name] = {
      cpuS,
      cpuPct: (100 * cpuS) / load.elapsedS,
      peakRssMb: end.peakRssKb / 1024,
      ...(gcStart && gcEnd && { gc: gcDelta(gcStart, gcEnd) }),
    };
  }
  const ours = Object.values(processes).reduce((sum, usage) => sum + usage.cpuS, 0);
  const harnessCpuS = (harness.user + harness.system) / 1e6;
  const { ghzCpuS, ...rest } = load;
  return {
    target: target.id,
    label: target.label,
    concurrency,
    ...rest,
    processes,
    other: {
      ghzCpuS,
      harnessCpuS,
      unrelatedCpuS: Math.max(0, machine.busyS - machine.stealS - ours - ghzCpuS - harnessCpuS),
      stealS: machine.stealS,
      machineBusyPct: (100 * machine.busyS) / (load.elapsedS * os.cpus().length),
    },
  };
}
