// What a launch runs, derived from the registry: every replica with its port, database and the
// addresses of the services it calls, and Envoy's topology when the launch has a front door.
// `npm start` (startPlan), `npm run mesh` (meshPlan), the benchmark and the tests all launch a plan;
// a test builds the plan from the same environment, so it knows every address the launch uses.
import path from "node:path";
import {
  type EnvoyTopology,
  edgeCredentials,
  envoyTracing,
  frontDoorTopology,
} from "../../deploy/envoy/topology.js";
import { isPostgresUrl } from "../../kit/db/index.js";
import { metricsPortFor, serviceVariable } from "../../kit/registry.js";
import { DEV_CERTS_DIR } from "../../kit/security/security.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { type ProcessSpec, repoRoot } from "./launcher.js";
import { freePorts } from "./ports.js";

export const HOST = "127.0.0.1";

export interface FleetPlan {
  dataDir: string;
  logDir: string;
  /** Every replica, replica 1 of each service first (in start order); named `<service>-<n>`. */
  replicas: ProcessSpec[];
  /** `ip:port` of each replica, by service. */
  addresses: Record<ServiceName, string[]>;
  /**
   * The database all replicas of a service share: its SQLite file, or a postgres:// URL (its
   * tables in the schema named after it).
   */
  databases: Record<ServiceName, string>;
  /**
   * The credentials folder (`npm run certs` names) when the launch runs mutual TLS: each replica
   * serves with its service's certificate, Envoy with the edge's, tools dial with `cli`'s.
   * Plaintext on loopback (the development profile) without it.
   */
  tls?: string;
  /** Envoy in front of the replicas, when the plan has a front door. */
  envoy?: {
    port: number;
    adminPort: number;
    /** Envoy's Prometheus stats, for scrapers (GET /metrics), when it has a stats listener. */
    statsPort?: number;
    /** Where the launcher writes the generated config. */
    configFile: string;
    /** One JSON line per request (deploy/envoy/access-log.ts ACCESS_LOG_FORMAT). */
    accessLog: string;
    topology: EnvoyTopology;
    /** Envoy's active health check interval. */
    healthCheckIntervalMs: number;
  };
}

export interface PlanOptions {
  dataDir: string;
  /** The ports of each service's replicas; one replica per port. */
  ports: Record<ServiceName, number[]>;
  /**
   * Where each replica serves its metrics, in the order of `ports`; a free port each (0) when
   * absent, which the replica reports once it serves.
   */
  metricsPorts?: Partial<Record<ServiceName, number[]>>;
  /** Name replicas `<service>-<n>` even when each service has one (the mesh does). */
  numbered?: boolean;
  /** PostgreSQL URLs of the services whose data is not in `<dataDir>/<service>.sqlite`. */
  databases?: Partial<Record<ServiceName, string>>;
  envoy?: {
    port: number;
    adminPort: number;
    /** A stats listener on this port (GET /metrics); none when absent. */
    statsPort?: number;
    healthCheckIntervalMs?: number;
    /** Where Envoy sends its spans (OTLP/gRPC), and the share of new traces it samples. */
    tracing?: EnvoyTopology["tracing"];
    /** Each caller's limit at the edge; none when absent. */
    rateLimit?: EnvoyTopology["rateLimit"];
  };
  /** Mutual TLS with the credentials in this folder; plaintext without. */
  tls?: string;
  /** Origins browsers may call Envoy from (CORS). */
  corsOrigins?: readonly string[];
}

/** The plan of a launch: every registered service, its replicas on `ports`, Envoy if asked. */
export function fleetPlan(options: PlanOptions): FleetPlan {
  const dataDir = path.resolve(options.dataDir);
  const logDir = path.join(dataDir, "logs");
  const { ports } = options;
  const all = [
    ...Object.values<number[]>(ports).flat(),
    ...Object.values(options.metricsPorts ?? {}).flat(),
    ...(options.envoy
      ? [options.envoy.port, options.envoy.adminPort, options.envoy.statsPort]
      : []),
  ];
  const taken = all.filter((port, i) => port !== 0 && all.indexOf(port) !== i);
  if (taken.length > 0) {
    throw new Error(`the launch's ports overlap: ${[...new Set(taken)].join(", ")}`);
  }
  const names = registry.names;
  const addresses = Object.fromEntries(
    names.map((name) => [name, ports[name].map((port) => `${HOST}:${port}`)]),
  ) as Record<ServiceName, string[]>;
  const databases = Object.fromEntries(
    names.map((name) => [name, options.databases?.[name] ?? path.join(dataDir, `${name}.sqlite`)]),
  ) as Record<ServiceName, string>;

  // Replica 1 of every service, then replica 2 of every service, and so on.
  const longest = Math.max(...names.map((name) => ports[name].length));
  const numbered = options.numbered || longest > 1;
  const replicas: ProcessSpec[] = [];
  for (let i = 0; i < longest; i++) {
    for (const service of registry.services) {
      const port = ports[service.name][i];
      if (port === undefined) continue;
      const database = databases[service.name];
      const env: Record<string, string> = {
        SHOP_DATA_DIR: dataDir,
        // The most specific setting, so that it wins over any the launcher was started with.
        ...(isPostgresUrl(database)
          ? { [serviceVariable(service.name, "DATABASE_URL")]: database }
          : { SHOP_DATABASE: database }),
        SHOP_METRICS_PORT: String(options.metricsPorts?.[service.name]?.[i] ?? 0),
        // Behind Envoy, a stopping replica says NOT_SERVING for two health checks before it
        // refuses calls, so Envoy has taken it out by then.
        ...(options.envoy && {
          SHOP_SHUTDOWN_ANNOUNCE_MS: String(2 * (options.envoy.healthCheckIntervalMs ?? 1_000)),
        }),
      };
      if (options.tls) {
        env.SHOP_TLS_CERT_FILE = path.join(options.tls, `${service.name}.crt`);
        env.SHOP_TLS_KEY_FILE = path.join(options.tls, `${service.name}.key`);
        env.SHOP_TLS_CA_FILE = path.join(options.tls, "ca.crt");
      }
      // Callers dial every replica of what they call, round_robin.
      for (const dependency of service.dependencies) {
        env[serviceVariable(dependency, "ADDR")] = addresses[dependency].join(",");
      }
      replicas.push({
        name: numbered ? `${service.name}-${i + 1}` : service.name,
        service: service.name,
        host: HOST,
        port,
        metricsPort: Number(env.SHOP_METRICS_PORT),
        env,
      });
    }
  }

  let envoy: FleetPlan["envoy"];
  if (options.envoy) {
    const healthCheckIntervalMs = options.envoy.healthCheckIntervalMs ?? 1_000;
    const accessLog = path.join(logDir, "access.log");
    envoy = {
      port: options.envoy.port,
      adminPort: options.envoy.adminPort,
      ...(options.envoy.statsPort !== undefined && { statsPort: options.envoy.statsPort }),
      configFile: path.join(dataDir, "envoy.yaml"),
      accessLog,
      healthCheckIntervalMs,
      topology: {
        ...frontDoorTopology(
          Object.fromEntries(
            names.map((name) => [name, ports[name].map((port) => ({ host: HOST, port }))]),
          ),
        ),
        listen: { address: HOST, port: options.envoy.port },
        admin: { address: HOST, port: options.envoy.adminPort },
        stats:
          options.envoy.statsPort === undefined
            ? undefined
            : { address: HOST, port: options.envoy.statsPort },
        ...(options.envoy.tracing && { tracing: options.envoy.tracing }),
        ...(options.envoy.rateLimit && { rateLimit: options.envoy.rateLimit }),
        accessLogPath: accessLog,
        healthCheckIntervalMs,
        ...edgeCredentials(options.tls ?? DEV_CERTS_DIR),
        // Plaintext to the services too when they run without TLS.
        tls: options.tls ? edgeCredentials(options.tls).tls : undefined,
        corsOrigins: options.corsOrigins ?? [],
      },
    };
  }
  return {
    dataDir,
    logDir,
    replicas,
    addresses,
    databases,
    ...(options.tls && { tls: options.tls }),
    ...(envoy && { envoy }),
  };
}

/** A decimal number as written, else NaN: Number() would read " " as 0, and "0x10" as 16. */
const decimal = (text: string) => (/^\s*\d+\s*$/.test(text) ? Number(text) : Number.NaN);

function port(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = decimal(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65_535) {
    throw new Error(`${name} must be a port number, got "${raw}"`);
  }
  return value;
}

/** How many of something, at least 1: SHOP_MESH_REPLICAS, say. */
function count(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = decimal(raw);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new Error(`${name} must be a whole number of at least 1, got "${raw}"`);
  }
  return value;
}

/**
 * The ports of a service's replicas: SHOP_<NAME>_PORTS (a comma-separated list), else
 * SHOP_<NAME>_PORT, or the registry's port, + 10 × i for replica i + 1.
 */
function replicaPorts(env: NodeJS.ProcessEnv, name: ServiceName, replicas: number): number[] {
  const list = env[serviceVariable(name, "PORTS")];
  if (list) {
    const ports = list.split(",").map(decimal);
    if (!ports.every((p) => Number.isInteger(p) && p > 0 && p <= 65_535)) {
      throw new Error(`${serviceVariable(name, "PORTS")} must list ports, got "${list}"`);
    }
    return ports;
  }
  const base = port(env, serviceVariable(name, "PORT"), registry.get(name).port);
  const ports = Array.from({ length: replicas }, (_, i) => base + 10 * i);
  if ((ports.at(-1) as number) > 65_535) {
    throw new Error(`${name}: ${replicas} replicas from port ${base} run past port 65535`);
  }
  return ports;
}

/**
 * Where a service's replicas serve metrics: SHOP_<NAME>_METRICS_PORTS (a comma-separated list),
 * else each gRPC port's metrics port as the registry derives it (metricsPortFor).
 */
function replicaMetricsPorts(env: NodeJS.ProcessEnv, name: ServiceName, grpc: number[]): number[] {
  const variable = serviceVariable(name, "METRICS_PORTS");
  const list = env[variable];
  if (list) {
    const ports = list.split(",").map(decimal);
    if (
      ports.length !== grpc.length ||
      !ports.every((p) => Number.isInteger(p) && p > 0 && p <= 65_535)
    ) {
      throw new Error(`${variable} must list a port per replica, got "${list}"`);
    }
    return ports;
  }
  return grpc.map((port) => metricsPortFor(registry.get(name), port));
}

const metricsPortsFrom = (env: NodeJS.ProcessEnv, ports: Record<ServiceName, number[]>) =>
  Object.fromEntries(
    registry.names.map((name) => [name, replicaMetricsPorts(env, name, ports[name])]),
  ) as Record<ServiceName, number[]>;

/** SHOP_<NAME>_DATABASE_URL, else SHOP_DATABASE_URL, of every service that has one. */
const databasesFrom = (env: NodeJS.ProcessEnv): Partial<Record<ServiceName, string>> =>
  Object.fromEntries(
    registry.names
      .map((name) => [name, env[serviceVariable(name, "DATABASE_URL")] || env.SHOP_DATABASE_URL])
      .filter(([, url]) => url),
  );

const portsFrom = (env: NodeJS.ProcessEnv, replicas: number) =>
  Object.fromEntries(
    registry.names.map((name) => [name, replicaPorts(env, name, replicas)]),
  ) as Record<ServiceName, number[]>;

/**
 * `npm start`: one replica of every service on its registry port (or SHOP_<NAME>_PORT), the data
 * in SHOP_DATA_DIR (data/), no front door.
 */
export function startPlan(env: NodeJS.ProcessEnv = process.env): FleetPlan {
  const ports = portsFrom(env, 1);
  return fleetPlan({
    dataDir: env.SHOP_DATA_DIR || path.join(repoRoot, "data"),
    ports,
    metricsPorts: metricsPortsFrom(env, ports),
    databases: databasesFrom(env),
  });
}

/** SHOP_CORS_ORIGINS: a comma-separated list of origins. */
export const corsOriginsFrom = (env: NodeJS.ProcessEnv) =>
  (env.SHOP_CORS_ORIGINS ?? "")
    .split(",")
    .map((origin) => origin.trim())
    .filter(Boolean);

/**
 * `npm run mesh`: SHOP_MESH_REPLICAS (2) replicas of every service, replica i on its port
 * + 10 × (i − 1) (or SHOP_<NAME>_PORTS), Envoy on SHOP_ENVOY_PORT (8080) with its admin on
 * SHOP_ENVOY_ADMIN_PORT (9901), and the data in SHOP_DATA_DIR (data/mesh). Mutual TLS inside and
 * TLS at the edge, with the development credentials of `npm run certs`. Each caller may make
 * SHOP_EDGE_RATE_LIMIT calls a second through Envoy; unset, there is no limit: every local
 * caller shares one address, and the tests and benches one subject.
 */
export function meshPlan(env: NodeJS.ProcessEnv = process.env): FleetPlan {
  const replicas = count(env, "SHOP_MESH_REPLICAS", 2);
  const ports = portsFrom(env, replicas);
  const tracing = envoyTracing(env);
  const calls = count(env, "SHOP_EDGE_RATE_LIMIT", 0);
  return fleetPlan({
    dataDir: env.SHOP_DATA_DIR || path.join(repoRoot, "data", "mesh"),
    ports,
    metricsPorts: metricsPortsFrom(env, ports),
    databases: databasesFrom(env),
    numbered: true,
    envoy: {
      port: port(env, "SHOP_ENVOY_PORT", 8080),
      adminPort: port(env, "SHOP_ENVOY_ADMIN_PORT", 9901),
      statsPort: port(env, "SHOP_ENVOY_STATS_PORT", ENVOY_STATS_PORT),
      ...(tracing && { tracing }),
      ...(calls > 0 && { rateLimit: { calls, seconds: 1 } }),
    },
    // The production shape: TLS at the edge, mutual TLS inside, with the development credentials.
    tls: DEV_CERTS_DIR,
    corsOrigins: corsOriginsFrom(env),
  });
}

/** Envoy's stats listener in `npm run mesh` (SHOP_ENVOY_STATS_PORT): beside its admin port. */
export const ENVOY_STATS_PORT = 9902;

/** Prometheus in `npm run mesh -- --observe` (SHOP_PROMETHEUS_PORT): its customary port. */
export const PROMETHEUS_PORT = 9090;

/**
 * Free ports for a launch, as the environment variables startPlan and meshPlan read: one per
 * replica of every registered service and one for its metrics, and Envoy's three and
 * Prometheus's when `envoy` is set.
 */
export async function freePortEnv(
  replicas: number,
  envoy: boolean,
): Promise<Record<string, string>> {
  const count = registry.names.length * replicas * 2 + (envoy ? 4 : 0);
  const ports = (await freePorts(count)).map(String);
  const take = (n: number) => ports.splice(0, n).join(",");
  const env: Record<string, string> = {};
  for (const name of registry.names) {
    env[serviceVariable(name, "PORTS")] = take(replicas);
    env[serviceVariable(name, "METRICS_PORTS")] = take(replicas);
  }
  if (envoy) {
    env.SHOP_ENVOY_PORT = take(1);
    env.SHOP_ENVOY_ADMIN_PORT = take(1);
    env.SHOP_ENVOY_STATS_PORT = take(1);
    env.SHOP_PROMETHEUS_PORT = take(1);
  }
  return env;
}
