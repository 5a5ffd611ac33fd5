// Prometheus beside a launch (`npm run mesh -- --observe`, the observability test): the Debian
// `prometheus` binary with a scrape configuration generated from the launch's plan
// (deploy/prometheus/config.ts) and the committed rules, its data under the launch's data dir.
import { execFileSync } from "node:child_process";
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { prometheusYaml, type ScrapeTargets } from "../../deploy/prometheus/config.js";
import { registry } from "../../services/registry.js";
import { LaunchError, type LoggedProcess, repoRoot, spawnLogged } from "./launcher.js";
import { type FleetPlan, HOST } from "./plan.js";

/** The committed rules (error rate, latency, reservations, reconciler), loaded by every launch. */
export const RULES_FILE = path.join(repoRoot, "deploy", "prometheus", "rules.yml");

/** The Prometheus binary: PROMETHEUS_BIN, else `prometheus` on the PATH (Debian's package). */
export function prometheusBinary(): string {
  const binary = process.env.PROMETHEUS_BIN || "prometheus";
  try {
    execFileSync(binary, ["--version"], { stdio: "ignore" });
  } catch {
    throw new LaunchError(
      `${binary} is not installed: apt-get install prometheus (or set PROMETHEUS_BIN)`,
    );
  }
  return binary;
}

/** Every replica's metrics and Envoy's stats listener in a launched plan. */
export function planTargets(plan: FleetPlan, metrics: Record<string, string>): ScrapeTargets {
  const services: Record<string, string[]> = {};
  for (const name of registry.names) services[name] = [];
  for (const replica of plan.replicas) {
    const address = metrics[replica.name];
    if (address) services[replica.service]?.push(address);
  }
  return {
    services,
    ...(plan.envoy?.statsPort && { envoy: `${HOST}:${plan.envoy.statsPort}` }),
  };
}

export interface PrometheusProcess extends LoggedProcess {
  url: string;
}

/**
 * Starts Prometheus on `port` scraping `targets` every `scrapeInterval`, and resolves once it is
 * ready (GET /-/ready). Its configuration and data go under `dataDir/prometheus`.
 */
export async function spawnPrometheus(options: {
  targets: ScrapeTargets;
  port: number;
  dataDir: string;
  logDir: string;
  scrapeInterval?: string;
}): Promise<PrometheusProcess> {
  const binary = prometheusBinary();
  const dir = path.join(options.dataDir, "prometheus");
  mkdirSync(dir, { recursive: true });
  const configFile = path.join(dir, "prometheus.yml");
  writeFileSync(
    configFile,
    prometheusYaml(
      options.targets,
      { scrapeInterval: options.scrapeInterval ?? "5s", ruleFiles: [RULES_FILE] },
      "# Written by the launcher from deploy/prometheus/config.ts and the launch's ports.\n",
    ),
  );
  const url = `http://${HOST}:${options.port}`;
  const proc = spawnLogged(
    "prometheus",
    binary,
    [
      `--config.file=${configFile}`,
      `--storage.tsdb.path=${path.join(dir, "data")}`,
      "--storage.tsdb.retention.time=2d",
      `--web.listen-address=${HOST}:${options.port}`,
    ],
    options.logDir,
  );
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new LaunchError(`prometheus exited at start; see ${proc.logFile}`);
    }
    const ready = await fetch(`${url}/-/ready`).then(
      (response) => response.ok,
      () => false,
    );
    if (ready) return { ...proc, url };
    if (Date.now() > deadline) {
      proc.child.kill("SIGKILL");
      throw new LaunchError(`prometheus was not ready within 30 s; see ${proc.logFile}`);
    }
    await sleep(100);
  }
}
