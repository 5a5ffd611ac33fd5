// Runs the real Envoy (.tools/bin/envoy, from `npm run tools envoy`) for a launcher, and waits
// until it is live and every upstream replica passes its health check.
import { existsSync, readFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { LaunchError, type LoggedProcess, repoRoot, spawnLogged } from "./launcher.js";

export const ENVOY_BINARY = path.join(repoRoot, ".tools/bin/envoy");

/** One upstream host as Envoy's admin /clusters reports it. */
export interface UpstreamHost {
  cluster: string;
  /** `ip:port`. */
  address: string;
  /** Health flags that are set, e.g. `failed_active_health_check`; empty when healthy. */
  flags: string[];
  /** Envoy's counters and gauges for the host (`rq_total`, `rq_success`, `cx_connect_fail`, …). */
  stats: Record<string, number>;
}

interface ClustersJson {
  cluster_statuses?: {
    name: string;
    host_statuses?: {
      address?: { socket_address?: { address?: string; port_value?: number } };
      stats?: { name: string; value?: string | number }[];
      health_status?: Record<string, unknown>;
    }[];
  }[];
}

/** Parses `/clusters?format=json`. */
export function upstreamHosts(clustersJson: string): UpstreamHost[] {
  const hosts: UpstreamHost[] = [];
  for (const cluster of (JSON.parse(clustersJson) as ClustersJson).cluster_statuses ?? []) {
    for (const host of cluster.host_statuses ?? []) {
      const socket = host.address?.socket_address;
      const health = host.health_status ?? {};
      const flags = Object.entries(health)
        .filter(([, value]) => value === true)
        .map(([flag]) => flag);
      const eds = health.eds_health_status;
      if (eds !== undefined && eds !== "HEALTHY") flags.push(`eds_${String(eds).toLowerCase()}`);
      const stats: Record<string, number> = {};
      for (const stat of host.stats ?? []) stats[stat.name] = Number(stat.value ?? 0);
      hosts.push({
        cluster: cluster.name,
        address: `${socket?.address}:${socket?.port_value}`,
        flags,
        stats,
      });
    }
  }
  return hosts;
}

/** GETs an admin path of the Envoy whose admin listens on 127.0.0.1:adminPort. */
export async function envoyAdmin(adminPort: number, adminPath: string): Promise<string> {
  const response = await fetch(`http://127.0.0.1:${adminPort}${adminPath}`, {
    signal: AbortSignal.timeout(2_000),
  });
  const body = await response.text();
  if (!response.ok) throw new Error(`envoy admin ${adminPath}: ${response.status} ${body}`);
  return body;
}

/**
 * Starts Envoy from the repo root (the config's descriptor path is relative to it), without hot
 * restart (no shared memory, so it never clashes with another Envoy), logging to logDir/envoy.log.
 */
export function spawnEnvoy(configFile: string, logDir: string): LoggedProcess {
  if (!existsSync(ENVOY_BINARY)) {
    throw new LaunchError(`${ENVOY_BINARY} is missing: run \`npm run tools envoy\``);
  }
  return spawnLogged(
    "envoy",
    ENVOY_BINARY,
    [
      ...["-c", configFile],
      "--disable-hot-restart",
      ...["--log-level", "info"],
      // Access log lines reach the file within a quarter of a second (the default is 10 s).
      ...["--file-flush-interval-msec", "250"],
    ],
    logDir,
  );
}

/**
 * Resolves when Envoy is LIVE and every host of every cluster is healthy. Rejects with the tail
 * of Envoy's log if it exits first, or with the hosts still failing at the deadline.
 */
export async function waitEnvoyHealthy(
  envoy: LoggedProcess,
  adminPort: number,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const tail = () => {
    try {
      return readFileSync(envoy.logFile, "utf8").trim().split("\n").slice(-5).join("\n");
    } catch {
      return "";
    }
  };
  let pending = ["the admin interface"];
  while (Date.now() < deadline) {
    if (envoy.child.exitCode !== null || envoy.child.signalCode !== null) {
      throw new LaunchError(`envoy failed to start:\n${tail()}\n(log: ${envoy.logFile})`);
    }
    try {
      if ((await envoyAdmin(adminPort, "/ready")).trim() !== "LIVE") {
        pending = ["envoy to be LIVE"];
      } else {
        const hosts = upstreamHosts(await envoyAdmin(adminPort, "/clusters?format=json"));
        pending = hosts
          .filter((host) => host.flags.length > 0)
          .map((host) => `${host.cluster} ${host.address} (${host.flags.join(", ")})`);
        if (hosts.length > 0 && pending.length === 0) return;
      }
    } catch {
      // Not listening yet.
    }
    await sleep(100);
  }
  throw new LaunchError(
    `envoy: not ready within ${timeoutMs} ms, waiting for ${pending.join("; ")} (log: ${envoy.logFile})`,
  );
}
