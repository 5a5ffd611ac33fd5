// Start to SERVING: how long a replica takes from its process starting to answering SERVING.
import { freePorts, spawnService, stopProcess, waitServing } from "../../scripts/lib/launcher.js";
import type { FleetPlan } from "../../scripts/lib/plan.js";
import { registry, type ServiceName } from "../../services/registry.js";
import type { Fleet } from "./targets.js";

/** One service's start times in one fleet, milliseconds, one per round. */
export interface StartupResult {
  fleet: Fleet;
  service: ServiceName;
  ms: number[];
}

export const median = (values: readonly number[]): number => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2
    ? (sorted[mid] as number)
    : ((sorted[mid - 1] as number) + (sorted[mid] as number)) / 2;
};

/**
 * Starts one more replica of every service of a running fleet, one at a time, `rounds` times
 * each, and times each from the fork to a SERVING health check. The replica shares the fleet's
 * database (already migrated) and settings, as a replica added to a running mesh does.
 */
export async function measureStartup(
  fleet: Fleet,
  plan: FleetPlan,
  rounds: number,
  env: Record<string, string>,
): Promise<StartupResult[]> {
  const results: StartupResult[] = [];
  for (const service of registry.names) {
    const spec = plan.replicas.find((replica) => replica.service === service);
    if (!spec) continue;
    const ms: number[] = [];
    for (let round = 0; round < rounds; round++) {
      const [port] = await freePorts(1);
      const started = performance.now();
      const proc = spawnService(
        {
          ...spec,
          name: `${spec.name}-startup`,
          port: port as number,
          env: { ...spec.env, ...env },
        },
        plan.logDir,
      );
      try {
        await waitServing(proc);
        ms.push(performance.now() - started);
      } finally {
        await stopProcess(proc);
      }
    }
    results.push({ fleet, service, ms });
  }
  return results;
}
