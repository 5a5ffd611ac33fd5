// The plan of `npm run mesh`: which replicas run where, with which database and dependencies, and
// the Envoy in front of them. Tests build the same plan from the same environment, so they can
// find, stop and restart a replica exactly as the launcher started it.
import path from "node:path";
import { type EnvoyTopology, localTopology } from "../../deploy/envoy/config.js";
import {
  DEFAULT_PORTS,
  type ProcessSpec,
  repoRoot,
  SERVICE_KINDS,
  type ServiceKind,
} from "./launcher.js";

export const MESH_HOST = "127.0.0.1";

export interface MeshPlan {
  dataDir: string;
  logDir: string;
  /** Every replica, replica 1 of each service first; named `<service>-<n>`. */
  replicas: ProcessSpec[];
  /** `ip:port` of each replica, by service. */
  addresses: Record<ServiceKind, string[]>;
  /** The SQLite file all replicas of a service share. */
  databases: Record<ServiceKind, string>;
  envoy: {
    port: number;
    adminPort: number;
    /** Where the launcher writes the generated config. */
    configFile: string;
    /** One JSON line per request (deploy/envoy/config.ts ACCESS_LOG_FORMAT). */
    accessLog: string;
    topology: EnvoyTopology;
    /** Envoy's active health check interval. */
    healthCheckIntervalMs: number;
  };
}

function int(env: NodeJS.ProcessEnv, name: string, fallback: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 0 || value > 65_535) {
    throw new Error(`${name} must be a port number, got "${raw}"`);
  }
  return value;
}

/** The ports of a service's replicas: SHOP_<SVC>_PORTS, else SHOP_<SVC>_PORT (base) + 10 × i. */
function replicaPorts(env: NodeJS.ProcessEnv, service: ServiceKind, replicas: number): number[] {
  const name = `SHOP_${service.toUpperCase()}`;
  const list = env[`${name}_PORTS`];
  if (list) {
    const ports = list.split(",").map((part) => Number(part.trim()));
    if (!ports.every((port) => Number.isInteger(port) && port > 0 && port <= 65_535)) {
      throw new Error(`${name}_PORTS must be a comma-separated list of ports, got "${list}"`);
    }
    return ports;
  }
  const base = int(env, `${name}_PORT`, DEFAULT_PORTS[service]);
  return Array.from({ length: replicas }, (_, i) => base + 10 * i);
}

/**
 * The mesh for an environment:
 *
 * - SHOP_MESH_REPLICAS (2): replicas per service.
 * - SHOP_USER_PORT, SHOP_PRODUCT_PORT, SHOP_ORDER_PORT (50051-50053): replica i listens on that
 *   base port + 10 × i; or SHOP_USER_PORTS=… etc. for an explicit comma-separated list.
 * - SHOP_ENVOY_PORT (8080), SHOP_ENVOY_ADMIN_PORT (9901).
 * - SHOP_DATA_DIR (data/mesh): the SQLite files, the generated Envoy config and logs/.
 */
export function meshPlan(env: NodeJS.ProcessEnv = process.env): MeshPlan {
  const replicaCount = int(env, "SHOP_MESH_REPLICAS", 2);
  if (replicaCount < 1) throw new Error("SHOP_MESH_REPLICAS must be at least 1");
  const dataDir = path.resolve(env.SHOP_DATA_DIR || path.join(repoRoot, "data", "mesh"));
  const logDir = path.join(dataDir, "logs");

  const ports = Object.fromEntries(
    SERVICE_KINDS.map((service) => [service, replicaPorts(env, service, replicaCount)]),
  ) as Record<ServiceKind, number[]>;
  const addresses = Object.fromEntries(
    SERVICE_KINDS.map((service) => [service, ports[service].map((port) => `${MESH_HOST}:${port}`)]),
  ) as Record<ServiceKind, string[]>;
  const databases = Object.fromEntries(
    SERVICE_KINDS.map((service) => [service, path.join(dataDir, `${service}.sqlite`)]),
  ) as Record<ServiceKind, string>;

  const envoyPort = int(env, "SHOP_ENVOY_PORT", 8080);
  const adminPort = int(env, "SHOP_ENVOY_ADMIN_PORT", 9901);
  const all = [...Object.values(ports).flat(), envoyPort, adminPort];
  const taken = all.filter((port, i) => all.indexOf(port) !== i);
  if (taken.length > 0)
    throw new Error(`the mesh's ports overlap: ${[...new Set(taken)].join(", ")}`);

  // Replica 1 of every service, then replica 2 of every service, and so on.
  const longest = Math.max(...Object.values(ports).map((list) => list.length));
  const replicas: ProcessSpec[] = [];
  for (let i = 0; i < longest; i++) {
    for (const service of SERVICE_KINDS) {
      const port = ports[service][i];
      if (port === undefined) continue;
      replicas.push({
        name: `${service}-${i + 1}`,
        service,
        host: MESH_HOST,
        port,
        env: {
          SHOP_DATA_DIR: dataDir,
          SHOP_DATABASE: databases[service],
          // The order service calls the others directly, round_robin over their replicas.
          ...(service === "order" && {
            SHOP_USER_ADDR: addresses.user.join(","),
            SHOP_PRODUCT_ADDR: addresses.product.join(","),
          }),
        },
      });
    }
  }

  const topology: EnvoyTopology = {
    ...localTopology(replicaCount),
    listen: { address: MESH_HOST, port: envoyPort },
    admin: { address: MESH_HOST, port: adminPort },
    services: Object.fromEntries(
      SERVICE_KINDS.map((service) => [
        service,
        ports[service].map((port) => ({ host: MESH_HOST, port })),
      ]),
    ),
    accessLogPath: path.join(logDir, "access.log"),
  };
  return {
    dataDir,
    logDir,
    replicas,
    addresses,
    databases,
    envoy: {
      port: envoyPort,
      adminPort,
      configFile: path.join(dataDir, "envoy.yaml"),
      accessLog: path.join(logDir, "access.log"),
      topology,
      healthCheckIntervalMs: topology.healthCheckIntervalMs ?? 1_000,
    },
  };
}
