// A real Envoy in front of upstreams a test runs: scripts/lib/envoy.ts's runner with the repo's
// front-door config on port 0, in a temp dir of its own.
//
//   const envoy = await startEnvoy({ services: { user: [{ host: "127.0.0.1", port }] } });
//   t.teardown(() => envoy.stop());
//   // call 127.0.0.1:${envoy.port}; inspect envoy.stats(), envoy.accessLog()
import { readFileSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { routedServices } from "../../deploy/envoy/topology.js";
import { type FrontDoorOptions, frontDoorConfig, spawnEnvoy } from "../../scripts/lib/envoy.js";

export { envoyBinary } from "../../scripts/lib/envoy.js";

export interface StartEnvoyOptions extends Omit<FrontDoorOptions, "accessLogPath"> {
  /**
   * Wait until every endpoint passes its gRPC health check before resolving: true (the default)
   * for all clusters, a list for some, false to return as soon as Envoy is live.
   */
  waitHealthy?: boolean | readonly string[];
  /** --drain-time-s, for a test of a drain. */
  drainTimeS?: number;
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
  /** The listener: gRPC, gRPC-Web, Connect and REST. */
  port: number;
  adminPort: number;
  /** `127.0.0.1:<port>`, for a grpc-js client target. */
  address: string;
  /** Per-host upstream counters and health, from `/clusters?format=json`. */
  stats(): Promise<ClusterStats>;
  /** GET an admin path such as `/stats?filter=retry`; throws on a non-2xx status. */
  admin(adminPath: string): Promise<string>;
  /** One counter by its full name, such as `cluster.product.upstream_rq_retry`; 0 while absent. */
  counter(name: string): Promise<number>;
  /** Resolves when every endpoint of the clusters (all by default) is healthy. */
  waitHealthy(clusters?: readonly string[], timeoutMs?: number): Promise<void>;
  /** The JSON access log lines written so far (Envoy flushes them every 50 ms). */
  accessLog(): Record<string, unknown>[];
  /** Envoy's own log so far. */
  stderr(): string;
  /** Kills Envoy and waits for it to exit, then removes its temp dir. Safe to call twice. */
  stop(): Promise<void>;
}

/** Temp dirs of Envoys still running; the runner kills the Envoys themselves at exit. */
const dirs = new Set<string>();
process.once("exit", () => {
  for (const dir of dirs) rmSync(dir, { recursive: true, force: true });
});

const COUNTERS = [
  "rq_total",
  "rq_success",
  "rq_error",
  "rq_active",
  "rq_timeout",
  "cx_total",
  "cx_active",
  "cx_connect_fail",
] as const;

/** Starts Envoy for `options.services` and waits until it is live (and healthy, by default). */
export async function startEnvoy(options: StartEnvoyOptions): Promise<EnvoyHandle> {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-envoy-"));
  dirs.add(dir);
  const accessLogPath = path.join(dir, "access.log");
  const envoy = spawnEnvoy({
    config: frontDoorConfig({
      ...options,
      services: options.services,
      accessLogPath,
      healthCheckIntervalMs: options.healthCheckIntervalMs ?? 500,
    }),
    logDir: dir,
    // One worker thread: tests run side by side on small machines.
    concurrency: 1,
    logLevel: "warn",
    flushIntervalMs: 50,
    ...(options.drainTimeS !== undefined && { drainTimeS: options.drainTimeS }),
  });
  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= (async () => {
      await envoy.stop();
      await rm(dir, { recursive: true, force: true });
      dirs.delete(dir);
    })();
    return stopped;
  };

  try {
    const wait = options.waitHealthy ?? true;
    await envoy.waitReady({
      clusters: wait === true ? undefined : wait,
      timeoutMs: 30_000,
    });
    const port = await envoy.listenerPort();
    // Every cluster of the config, those without hosts too.
    const clusters = [...new Set(routedServices().map(({ cluster }) => cluster))];
    const stats = async () => {
      const result: ClusterStats = Object.fromEntries(clusters.map((name) => [name, {}]));
      for (const { cluster, address, flags, stats: counters } of await envoy.hosts()) {
        const named = Object.fromEntries(COUNTERS.map((name) => [name, counters[name] ?? 0]));
        result[cluster] = {
          ...result[cluster],
          [address]: {
            healthy: flags.length === 0,
            healthFlags: flags,
            ...(named as Record<(typeof COUNTERS)[number], number>),
            counters,
          },
        };
      }
      return result;
    };
    return {
      port,
      adminPort: await envoy.adminPort(),
      address: `127.0.0.1:${port}`,
      stats,
      admin: envoy.admin,
      counter: envoy.counter,
      waitHealthy: (clusters, timeoutMs = 20_000) => envoy.waitReady({ clusters, timeoutMs }),
      accessLog: () =>
        readText(accessLogPath)
          .split("\n")
          .slice(0, -1) // what follows the last newline is not a whole line yet
          .filter((line) => line.startsWith("{"))
          .map((line) => JSON.parse(line) as Record<string, unknown>),
      stderr: () => readText(envoy.logFile),
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** A file's text; empty while it does not exist. */
function readText(file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch {
    return "";
  }
}
