// Starts a real Envoy (.tools/bin/envoy, from `npm run tools`) in front of upstreams a test runs.
//
//   const envoy = await startEnvoy({ services: { user: [{ host: "127.0.0.1", port }] } });
//   t.teardown(() => envoy.stop());
//   // call 127.0.0.1:${envoy.port}; inspect envoy.stats(), envoy.accessLog()
//
// Envoy binds its listener and admin on port 0; the admin address comes from
// --admin-address-path and the listener's from the admin's /listeners. Hot restart is disabled,
// so Envoy takes no shared memory or base id and any number can run side by side.
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, rmSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  DEFAULT_DESCRIPTOR_FILE,
  type Endpoint,
  type EnvoyTopology,
  envoyConfig,
  loadDescriptorServices,
} from "../../deploy/envoy/config.js";
import { repoRoot, tool } from "./exec.js";

/** The Envoy binary; fails with the fix when `npm run tools` has not installed it. */
export function envoyBinary(): string {
  const binary = tool("envoy");
  if (!existsSync(binary)) {
    throw new Error(`${binary} is missing: run \`npm run tools\` to install Envoy`);
  }
  return binary;
}

export interface StartEnvoyOptions {
  /** Replicas per cluster (`user`, `product`, `order`); a cluster left out has no endpoints. */
  services: Partial<Record<string, readonly Endpoint[]>>;
  /**
   * Wait until every endpoint passes its gRPC health check before resolving: true (the default)
   * for all clusters, a list for some, false to return as soon as Envoy is live.
   */
  waitHealthy?: boolean | readonly string[];
  /** Descriptor set for the transcoder; the repo's by default. */
  descriptorPath?: string;
  /** Active health check interval; 500 ms by default so tests see changes quickly. */
  healthCheckIntervalMs?: number;
  /** Worker threads; 1 by default (tests run side by side on small machines). */
  concurrency?: number;
  /** Envoy's own log level (stderr); access logs always go to stdout. */
  logLevel?: string;
  /** Overall startup budget. */
  timeoutMs?: number;
}

/** One upstream host as Envoy's admin /clusters reports it. */
export interface HostStats {
  healthy: boolean;
  /** Health flags that are set, e.g. `failed_active_health_check`, `failed_outlier_check`. */
  healthFlags: string[];
  rq_total: number;
  rq_success: number;
  rq_error: number;
  rq_active: number;
  rq_timeout: number;
  cx_total: number;
  cx_active: number;
  cx_connect_fail: number;
  /** Every counter and gauge of the host, by name. */
  counters: Record<string, number>;
}

/** Per cluster, per `host:port`. */
export type ClusterStats = Record<string, Record<string, HostStats>>;

export interface EnvoyHandle {
  /** The listener: gRPC, gRPC-Web and REST. */
  port: number;
  adminPort: number;
  /** `127.0.0.1:<port>`, for a grpc-js client target. */
  address: string;
  /** Per-host upstream counters and health, from `/clusters?format=json`. */
  stats(): Promise<ClusterStats>;
  /** GET an admin path such as `/stats?filter=retry`; throws on a non-2xx status. */
  admin(adminPath: string): Promise<string>;
  /** Resolves when every endpoint of the clusters (all by default) is healthy. */
  waitHealthy(clusters?: readonly string[], timeoutMs?: number): Promise<void>;
  /** The JSON access log lines written so far (Envoy flushes them every 50 ms). */
  accessLog(): Record<string, unknown>[];
  /** Envoy's stderr so far. */
  stderr(): string;
  /** Kills Envoy and waits for it to exit, then removes its temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

const running = new Map<ChildProcess, string>();
let exitHookInstalled = false;

/** Starts Envoy for `options.services` and waits until it is live (and healthy, by default). */
export async function startEnvoy(options: StartEnvoyOptions): Promise<EnvoyHandle> {
  const binary = envoyBinary();
  const descriptorPath = options.descriptorPath ?? DEFAULT_DESCRIPTOR_FILE;
  const services = loadDescriptorServices(descriptorPath);
  const topologyServices: Record<string, readonly Endpoint[]> = {};
  for (const service of services) {
    topologyServices[service.cluster] = options.services[service.cluster] ?? [];
  }
  for (const name of Object.keys(options.services)) {
    if (!(name in topologyServices)) throw new Error(`no shop.${name}.v1 service for "${name}"`);
  }
  const topology: EnvoyTopology = {
    listen: { address: "127.0.0.1", port: 0 },
    admin: { address: "127.0.0.1", port: 0 },
    descriptorPath,
    services: topologyServices,
    healthCheckIntervalMs: options.healthCheckIntervalMs ?? 500,
  };

  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-envoy-"));
  const configFile = path.join(dir, "envoy.json");
  const adminFile = path.join(dir, "admin-address");
  await writeFile(configFile, JSON.stringify(envoyConfig(topology, services), null, 2));

  const child = spawn(
    binary,
    [
      ...["-c", configFile],
      ...["--admin-address-path", adminFile],
      "--disable-hot-restart",
      ...["--concurrency", String(options.concurrency ?? 1)],
      ...["--log-level", options.logLevel ?? "warn"],
      ...["--file-flush-interval-msec", "50"],
    ],
    { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] },
  );
  running.set(child, dir);
  installExitHook();

  let stdout = "";
  let stderr = "";
  child.stdout?.setEncoding("utf8").on("data", (chunk: string) => {
    stdout += chunk;
  });
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr += chunk;
  });
  const exited = new Promise<number | null>((resolve) => {
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve(code ?? (signal ? -1 : null));
    });
  });
  let exitCode: number | null | undefined;
  void exited.then((code) => {
    exitCode = code;
  });

  let stopped = false;
  const stop = async () => {
    if (!stopped) {
      stopped = true;
      if (exitCode === undefined) {
        child.kill("SIGTERM");
        const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
        await exited;
        clearTimeout(killer);
      }
      await rm(dir, { recursive: true, force: true });
    }
  };

  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  /** Polls `probe` until it returns a value, Envoy exits, or the startup budget runs out. */
  const poll = async <T>(what: string, probe: () => Promise<T | undefined>): Promise<T> => {
    for (;;) {
      if (exitCode !== undefined) {
        throw new Error(`envoy exited (${exitCode}) while ${what}:\n${stderr.slice(-4000)}`);
      }
      const value = await probe().catch(() => undefined);
      if (value !== undefined) return value;
      if (Date.now() > deadline) {
        throw new Error(`envoy: timed out ${what}:\n${stderr.slice(-4000)}`);
      }
      await sleep(50);
    }
  };

  try {
    const adminAddress = await poll("waiting for its admin address", async () => {
      const text = (await readFile(adminFile, "utf8")).trim();
      return text === "" ? undefined : text;
    });
    const adminPort = Number(adminAddress.split(":").at(-1));
    const admin = async (adminPath: string) => {
      const response = await fetch(`http://127.0.0.1:${adminPort}${adminPath}`);
      const body = await response.text();
      if (!response.ok) throw new Error(`envoy admin ${adminPath}: ${response.status} ${body}`);
      return body;
    };
    await poll("waiting for /ready to say LIVE", async () =>
      (await admin("/ready")).trim() === "LIVE" ? true : undefined,
    );
    const port = await poll("reading the listener's port", async () => {
      const listeners = JSON.parse(await admin("/listeners?format=json")) as {
        listener_statuses?: { local_address?: { socket_address?: { port_value?: number } } }[];
      };
      const bound = listeners.listener_statuses?.[0]?.local_address?.socket_address?.port_value;
      return bound ? bound : undefined;
    });

    const stats = async () => parseClusters(await admin("/clusters?format=json"));
    const waitHealthy = async (clusters?: readonly string[], timeoutMs = 20_000) => {
      const until = Date.now() + timeoutMs;
      for (;;) {
        const all = await stats();
        const pending = Object.entries(all)
          .filter(([name]) => !clusters || clusters.includes(name))
          .flatMap(([name, hosts]) =>
            Object.entries(hosts)
              .filter(([, host]) => !host.healthy)
              .map(([address, host]) => `${name} ${address} (${host.healthFlags.join(", ")})`),
          );
        if (pending.length === 0) return;
        if (exitCode !== undefined) throw new Error(`envoy exited (${exitCode}):\n${stderr}`);
        if (Date.now() > until) {
          throw new Error(`envoy: upstreams not healthy in ${timeoutMs} ms: ${pending.join("; ")}`);
        }
        await sleep(50);
      }
    };

    const wait = options.waitHealthy ?? true;
    if (wait !== false) {
      await waitHealthy(wait === true ? undefined : wait, Math.max(1_000, deadline - Date.now()));
    }

    return {
      port,
      adminPort,
      address: `127.0.0.1:${port}`,
      stats,
      admin,
      waitHealthy,
      accessLog: () =>
        stdout
          .split("\n")
          .filter((line) => line.startsWith("{"))
          .map((line) => JSON.parse(line) as Record<string, unknown>),
      stderr: () => stderr,
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
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

/** `/clusters?format=json` as per-cluster, per-host stats. */
export function parseClusters(text: string): ClusterStats {
  const result: ClusterStats = {};
  for (const cluster of (JSON.parse(text) as ClustersJson).cluster_statuses ?? []) {
    const hosts: Record<string, HostStats> = {};
    for (const host of cluster.host_statuses ?? []) {
      const socket = host.address?.socket_address;
      const counters: Record<string, number> = {};
      for (const stat of host.stats ?? []) counters[stat.name] = Number(stat.value ?? 0);
      const health = host.health_status ?? {};
      // Set flags are true booleans; eds_health_status is HEALTHY for static and DNS hosts.
      const healthFlags = Object.entries(health)
        .filter(([, value]) => value === true)
        .map(([flag]) => flag);
      const eds = health.eds_health_status;
      hosts[`${socket?.address}:${socket?.port_value}`] = {
        healthy: healthFlags.length === 0 && (eds === undefined || eds === "HEALTHY"),
        healthFlags,
        rq_total: counters.rq_total ?? 0,
        rq_success: counters.rq_success ?? 0,
        rq_error: counters.rq_error ?? 0,
        rq_active: counters.rq_active ?? 0,
        rq_timeout: counters.rq_timeout ?? 0,
        cx_total: counters.cx_total ?? 0,
        cx_active: counters.cx_active ?? 0,
        cx_connect_fail: counters.cx_connect_fail ?? 0,
        counters,
      };
    }
    result[cluster.name] = hosts;
  }
  return result;
}

/** A test runner that dies mid-test must not leave Envoys behind. */
function installExitHook() {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.once("exit", () => {
    for (const [child, dir] of running) {
      child.kill("SIGKILL");
      rmSync(dir, { recursive: true, force: true });
    }
  });
}
