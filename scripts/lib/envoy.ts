// The one Envoy runner: `npm run mesh`, the benchmark and the tests all start the real Envoy
// (.tools/bin/envoy, from `npm run tools envoy`) through spawnEnvoy, wait for it with waitReady,
// and read its per-host state through the one parser of /clusters?format=json, upstreamHosts.
//
//   const envoy = spawnEnvoy({ config: frontDoorConfig({ services }), logDir });
//   await envoy.waitReady();                    // LIVE, and every upstream host healthy
//   const port = await envoy.listenerPort();    // the config listens on port 0
//   await envoy.stop();
//
// Envoy runs from the repo root (configs name the descriptor set relative to it) without hot
// restart (no shared memory or base id, so any number run side by side), and writes its admin
// address to a file, so a config may bind its admin on port 0 too.
import type { ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { envoyConfig } from "../../deploy/envoy/config.js";
import {
  type Endpoint,
  type EnvoyTopology,
  edgeCredentials,
  frontDoorTopology,
} from "../../deploy/envoy/topology.js";
import { descriptorPath } from "../../kit/descriptor.js";
import { DEV_CERTS_DIR } from "../../kit/security/security.js";
import { LaunchError, type LoggedProcess, spawnLogged, stopProcess, tool } from "./launcher.js";

/** The Envoy binary; fails with the fix when `npm run tools envoy` has not installed it. */
export function envoyBinary(): string {
  const binary = tool("envoy");
  if (!existsSync(binary))
    throw new LaunchError(`${binary} is missing: run \`npm run tools envoy\``);
  return binary;
}

// ---------------------------------------------------------------------------------------------
// The admin API

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
      // Set flags are true booleans; eds_health_status is HEALTHY for static and DNS hosts.
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

/** One counter by its full name (`cluster.product.upstream_rq_retry`); 0 while it does not exist. */
export async function envoyCounter(adminPort: number, name: string): Promise<number> {
  const escaped = name.replaceAll(".", "\\.");
  const body = JSON.parse(
    await envoyAdmin(adminPort, `/stats?format=json&filter=^${escaped}$`),
  ) as {
    stats: { name: string; value?: number }[];
  };
  return body.stats.find((stat) => stat.name === name)?.value ?? 0;
}

export interface ReadyOptions {
  /** Clusters whose hosts must all be healthy: every cluster by default, none with false. */
  clusters?: readonly string[] | false;
  /** 30 s by default. */
  timeoutMs?: number;
}

/** What a wait is for: the value once there, else what it is still waiting for. */
type Probe<T> = () => Promise<{ value: T } | { pending: string }>;

const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

/** The last lines of a process's log file. */
function logTail(proc: LoggedProcess, lines = 5): string {
  try {
    return readFileSync(proc.logFile, "utf8").trim().split("\n").slice(-lines).join("\n");
  } catch {
    return "";
  }
}

/**
 * Polls `probe` every 100 ms until it has a value. Rejects with a LaunchError naming what it was
 * waiting for when `envoy` exits first or the deadline passes; a probe that throws (nothing
 * listening yet) counts as still waiting for `first`.
 */
async function until<T>(
  first: string,
  probe: Probe<T>,
  timeoutMs: number,
  envoy?: LoggedProcess,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  const log = () => (envoy ? `\n${logTail(envoy)}\n(log: ${envoy.logFile})` : "");
  let pending = first;
  for (;;) {
    if (envoy && exited(envoy.child)) {
      const how = envoy.child.exitCode ?? envoy.child.signalCode;
      throw new LaunchError(`envoy exited (${how}) while waiting for ${pending}:${log()}`);
    }
    const result = await probe().catch(() => undefined);
    if (result && "value" in result) return result.value;
    if (result) pending = result.pending;
    if (Date.now() >= deadline) {
      throw new LaunchError(
        `envoy: not ready within ${timeoutMs} ms, waiting for ${pending}${log()}`,
      );
    }
    await sleep(100);
  }
}

/**
 * Resolves when the Envoy whose admin listens on 127.0.0.1:adminPort is LIVE and every host of
 * the clusters (at least one) is healthy; rejects with the hosts still failing at the deadline, or
 * as soon as `envoy`, when given, exits.
 */
export function waitEnvoyReady(
  adminPort: number,
  options: ReadyOptions & { envoy?: LoggedProcess } = {},
): Promise<void> {
  const { clusters, timeoutMs = 30_000, envoy } = options;
  const probe: Probe<void> = async () => {
    if ((await envoyAdmin(adminPort, "/ready")).trim() !== "LIVE") {
      return { pending: "envoy to be LIVE" };
    }
    if (clusters === false) return { value: undefined };
    const hosts = upstreamHosts(await envoyAdmin(adminPort, "/clusters?format=json")).filter(
      (host) => !clusters || clusters.includes(host.cluster),
    );
    if (hosts.length === 0) return { pending: `hosts in ${clusters || "any cluster"}` };
    const failing = hosts
      .filter((host) => host.flags.length > 0)
      .map((host) => `${host.cluster} ${host.address} (${host.flags.join(", ")})`);
    return failing.length === 0 ? { value: undefined } : { pending: failing.join("; ") };
  };
  return until("the admin interface", probe, timeoutMs, envoy);
}

// ---------------------------------------------------------------------------------------------
// The process

export interface EnvoyOptions {
  /** A config file (YAML or JSON), or a config object, which is written to logDir/envoy.json. */
  config: string | Record<string, unknown>;
  /** Envoy's own log (stdout and stderr) is appended to logDir/envoy.log. */
  logDir: string;
  /** Worker threads (--concurrency); Envoy's default is one per core. */
  concurrency?: number;
  /** --log-level; info by default. */
  logLevel?: string;
  /** How often file access logs are flushed; 250 ms by default (Envoy's own default is 10 s). */
  flushIntervalMs?: number;
  /** --drain-time-s: how long a drain of the listeners lasts; Envoy's default is 600 s. */
  drainTimeS?: number;
}

export interface EnvoyProcess extends LoggedProcess {
  /** The config Envoy runs. */
  configFile: string;
  /** The admin port, once Envoy has bound it (from --admin-address-path). */
  adminPort(): Promise<number>;
  /** GETs an admin path such as `/stats?filter=retry`; throws on a non-2xx status. */
  admin(adminPath: string): Promise<string>;
  /** One counter by its full name; 0 while it does not exist (envoyCounter). */
  counter(name: string): Promise<number>;
  /** Every upstream host with its health flags and counters. */
  hosts(): Promise<UpstreamHost[]>;
  /** The port Envoy's first listener is bound to: for a config that listens on port 0. */
  listenerPort(): Promise<number>;
  /** Resolves when Envoy is LIVE and every host of the clusters is healthy (waitEnvoyReady). */
  waitReady(options?: ReadyOptions): Promise<void>;
  /** SIGTERM, then SIGKILL after the grace period (5 s by default). */
  stop(graceMs?: number): Promise<void>;
}

/** Envoys still running, killed if this process exits without stopping them. */
const running = new Set<ChildProcess>();
let exitHookInstalled = false;

/** Starts Envoy and returns at once; waitReady says when it is up. */
export function spawnEnvoy(options: EnvoyOptions): EnvoyProcess {
  const binary = envoyBinary();
  const configFile =
    typeof options.config === "string" ? options.config : path.join(options.logDir, "envoy.json");
  const adminFile = path.join(options.logDir, "envoy-admin-address");
  mkdirSync(options.logDir, { recursive: true });
  // The address file of an earlier run must not be mistaken for this one's.
  rmSync(adminFile, { force: true });
  if (typeof options.config !== "string") {
    writeFileSync(configFile, JSON.stringify(options.config, null, 2));
  }
  const proc = spawnLogged(
    "envoy",
    binary,
    [
      ...["-c", configFile],
      ...["--admin-address-path", adminFile],
      "--disable-hot-restart",
      ...(options.concurrency === undefined ? [] : ["--concurrency", String(options.concurrency)]),
      ...(options.drainTimeS === undefined ? [] : ["--drain-time-s", String(options.drainTimeS)]),
      ...["--log-level", options.logLevel ?? "info"],
      // Access log lines reach their file this soon after the request.
      ...["--file-flush-interval-msec", String(options.flushIntervalMs ?? 250)],
    ],
    options.logDir,
  );
  running.add(proc.child);
  proc.child.once("exit", () => running.delete(proc.child));
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.once("exit", () => {
      for (const child of running) child.kill("SIGKILL");
    });
  }

  let knownAdminPort: number | undefined;
  const adminPort = async (timeoutMs = 30_000) => {
    knownAdminPort ??= await until<number>(
      "its admin address",
      async () => {
        const address = readFileSync(adminFile, "utf8").trim();
        return address
          ? { value: Number(address.split(":").at(-1)) }
          : { pending: "its admin address" };
      },
      timeoutMs,
      proc,
    );
    return knownAdminPort;
  };
  const admin = async (adminPath: string) => envoyAdmin(await adminPort(), adminPath);
  return {
    ...proc,
    configFile,
    adminPort: () => adminPort(),
    admin,
    counter: async (name) => envoyCounter(await adminPort(), name),
    hosts: async () => upstreamHosts(await admin("/clusters?format=json")),
    listenerPort: () =>
      until<number>(
        "its listener",
        async () => {
          const listeners = JSON.parse(await admin("/listeners?format=json")) as {
            listener_statuses?: { local_address?: { socket_address?: { port_value?: number } } }[];
          };
          const port = listeners.listener_statuses?.[0]?.local_address?.socket_address?.port_value;
          return port ? { value: port } : { pending: "its listener" };
        },
        10_000,
        proc,
      ),
    waitReady: async (ready = {}) => {
      const started = Date.now();
      const timeoutMs = ready.timeoutMs ?? 30_000;
      const port = await adminPort(timeoutMs);
      const left = Math.max(1, timeoutMs - (Date.now() - started));
      await waitEnvoyReady(port, { ...ready, timeoutMs: left, envoy: proc });
    },
    stop: (graceMs = 5_000) => stopProcess(proc, graceMs),
  };
}

export interface FrontDoorOptions {
  /** Replicas per registered service; a service left out has none. */
  services: Partial<Record<string, readonly Endpoint[]>>;
  /** A file for the JSON access log; stdout (so Envoy's log) when left out. */
  accessLogPath?: string;
  /** Active health check interval (1 s by default). */
  healthCheckIntervalMs?: number;
  /** How long a client may take to send a whole request (60 s by default). */
  requestTimeoutMs?: number;
  /**
   * TLS at the edge and mutual TLS to the upstreams with the credentials in this folder
   * (`npm run certs` names); plaintext both sides without. Tokens are checked either way.
   */
  tls?: string;
  /** Origins browsers may call from (CORS). */
  corsOrigins?: readonly string[];
  /** Each caller's limit (rate-limit.ts); none when absent. */
  rateLimit?: EnvoyTopology["rateLimit"];
  /** Envoy's heap budget, MiB (deploy/settings.ts ENVOY_HEAP_MIB by default). */
  heapMiB?: number;
}

/**
 * The repo's front-door config (deploy/envoy/config.ts) in front of the given upstreams, its
 * listener and admin on 127.0.0.1 port 0: read them back with listenerPort() and adminPort().
 */
export function frontDoorConfig(options: FrontDoorOptions): Record<string, unknown> {
  return envoyConfig({
    ...frontDoorTopology(options.services as Record<string, readonly Endpoint[]>),
    listen: { address: "127.0.0.1", port: 0 },
    admin: { address: "127.0.0.1", port: 0 },
    descriptorPath,
    accessLogPath: options.accessLogPath,
    healthCheckIntervalMs: options.healthCheckIntervalMs,
    requestTimeoutMs: options.requestTimeoutMs,
    ...edgeCredentials(options.tls ?? DEV_CERTS_DIR),
    tls: options.tls ? edgeCredentials(options.tls).tls : undefined,
    corsOrigins: options.corsOrigins ?? [],
    ...(options.rateLimit && { rateLimit: options.rateLimit }),
    ...(options.heapMiB && { heapMiB: options.heapMiB }),
  });
}
