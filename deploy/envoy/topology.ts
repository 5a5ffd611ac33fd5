// What the front door fronts: the topology (listeners, replicas per cluster, credentials), the proto
// services it routes, and the topologies of the local mesh, DNS names and docker compose.

import { contractMethods, type MethodInfo } from "../../kit/contract.js";
import { otlpEndpoint, sampleRatio } from "../../kit/observability/tracing.js";
import type { ServiceRegistry } from "../../kit/registry.js";
import type { AccessRule } from "../../kit/security/auth.js";
import { DEV_AUDIENCE, DEV_ISSUER, PRODUCTION_ISSUER } from "../../kit/security/security.js";
import { accessRules } from "../../kit/service.js";
import { registry as defaultRegistry } from "../../services/registry.js";
import { EDGE_RATE_LIMIT, TRACING_SETTINGS } from "../settings.js";

/** One upstream replica. `host` is an IP literal (STATIC cluster) or a DNS name (STRICT_DNS). */
export interface Endpoint {
  host: string;
  port: number;
}

/** Where Envoy listens and which replicas serve each cluster. */
export interface EnvoyTopology {
  /** The one listener carrying gRPC, gRPC-Web and JSON/REST. */
  listen: { address: string; port: number };
  /** The admin interface; keep it on loopback, it can stop the server. */
  admin: { address: string; port: number };
  /**
   * The descriptor set as Envoy opens it. A relative path is resolved by Envoy against its working
   * directory (not the config file's), so start Envoy from the repo root for the committed config.
   */
  descriptorPath: string;
  /** Replicas per cluster: one cluster per public registered service, named after it. */
  services: Record<string, readonly Endpoint[]>;
  /** JSON access log destination; stdout when absent. */
  accessLogPath?: string;
  /** Active health check interval; 1000 ms when absent. */
  healthCheckIntervalMs?: number;
  /** How long a client may take to send a whole request (config.ts); 60000 ms when absent. */
  requestTimeoutMs?: number;
  /** Envoy's heap budget (overload-manager.ts); ENVOY_HEAP_MIB when absent. */
  heapMiB?: number;
  /**
   * The edge's mTLS identity (files as Envoy opens them): the listener serves TLS with it, and
   * Envoy presents it to the services, whose certificates it checks against `ca`. Plaintext on
   * both sides without it: the development profile, on loopback only.
   */
  tls?: { cert: string; key: string; ca: string };
  /** How Envoy checks bearer tokens: the JWKS file as Envoy opens it, issuer and audience. */
  jwt: { jwksPath: string; issuer: string; audience: string };
  /** The origins a browser may call from (CORS, exact matches); none when empty. */
  corsOrigins: readonly string[];
  /**
   * At most `calls` calls in each `seconds` from one caller (rate-limit.ts): a token's subject,
   * or the client's address for calls without a token. No limit when absent.
   */
  rateLimit?: { calls: number; seconds: number };
  /** A listener serving only Envoy's Prometheus stats (GET /metrics), for scrapers; none when absent. */
  stats?: { address: string; port: number };
  /**
   * Envoy's OpenTelemetry tracer: the edge span of every sampled request, the root of its trace,
   * exported over OTLP/gRPC to `collector`; `samplePercent` of new traces (a request that brings
   * a sampled `traceparent` is always traced). No tracing when absent.
   */
  tracing?: {
    collector: Endpoint;
    samplePercent: number;
    /** The collector takes TLS (an https:// endpoint), checked against the system's CAs. */
    tls?: boolean;
    /** Metadata every export carries, e.g. a collector's API key (OTEL_EXPORTER_OTLP_HEADERS). */
    headers?: Readonly<Record<string, string>>;
  };
}

/** One proto service as Envoy routes it, and the cluster that serves it. */
export interface GrpcService {
  /** Fully qualified name, e.g. `shop.user.v1.UserService`. */
  fullName: string;
  /** The registered service that serves it, e.g. `user`. */
  cluster: string;
  /** Its rpcs, as the descriptor set states them. */
  methods: MethodInfo[];
  /** Who may call each rpc, by path: the service module's access rules. */
  access: ReadonlyMap<string, AccessRule>;
}

/**
 * The proto services Envoy routes: the public ones of every registered service. Internal proto
 * services get no route (a call answers UNIMPLEMENTED, as for an unknown method), no REST path
 * and no place in the edge's reflection.
 */
export function routedServices(registry: ServiceRegistry = defaultRegistry): GrpcService[] {
  return registry.services
    .flatMap((service) =>
      service.publicServices.map((fullName) => ({
        fullName,
        cluster: service.name,
        methods: contractMethods(fullName),
        access: accessRules(service.module),
      })),
    )
    .sort((a, b) => a.fullName.localeCompare(b.fullName));
}

/** The repo's descriptor set, as Envoy opens it when it runs from the repo root. */
const DESCRIPTOR = "gen/descriptor/shop.binpb";

/** The development credentials (`npm run certs`), as Envoy opens them from the repo root. */
const DEV_CERTS = ".certs";

/** The edge identity and JWKS in a credentials folder (`npm run certs` names). */
export const edgeCredentials = (dir: string) => ({
  tls: { cert: `${dir}/edge.crt`, key: `${dir}/edge.key`, ca: `${dir}/ca.crt` },
  jwt: { jwksPath: `${dir}/jwks.json`, issuer: DEV_ISSUER, audience: DEV_AUDIENCE },
});

/** Envoy's admin port where a deployment does not move it, on loopback only. */
export const ENVOY_ADMIN_PORT = 9901;

/**
 * A front door on 127.0.0.1:8080 (admin :9901) in front of `endpoints`, which names the replicas
 * of every public registered service.
 */
export function frontDoorTopology(
  endpoints: Record<string, readonly Endpoint[]>,
  registry: ServiceRegistry = defaultRegistry,
): EnvoyTopology {
  const services: Record<string, readonly Endpoint[]> = {};
  for (const service of registry.services) {
    if (service.publicServices.length > 0) {
      services[service.name] = endpoints[service.name] ?? [];
    }
  }
  return {
    listen: { address: "127.0.0.1", port: 8080 },
    admin: { address: "127.0.0.1", port: ENVOY_ADMIN_PORT },
    // Relative: Envoy must run from the repo root.
    descriptorPath: DESCRIPTOR,
    services,
    // TLS at the edge and mutual TLS to the services, with the development credentials.
    ...edgeCredentials(DEV_CERTS),
    corsOrigins: [],
  };
}

/**
 * The mesh on this machine (`npm run mesh`): `replicas` of each service, on port + 10 × i, and
 * the stats listener on :9902.
 */
export function localTopology(replicas = 2, registry = defaultRegistry): EnvoyTopology {
  const topology = frontDoorTopology(
    Object.fromEntries(
      registry.services.map((service) => [
        service.name,
        Array.from({ length: replicas }, (_, i) => ({
          host: "127.0.0.1",
          port: service.port + 10 * i,
        })),
      ]),
    ),
    registry,
  );
  return { ...topology, stats: { address: "127.0.0.1", port: 9902 } };
}

/**
 * Each service by one DNS name, its own, on its registry port: every address the name resolves to
 * is a replica (a compose service, a Kubernetes headless Service). Listens on every interface, and
 * limits each caller to EDGE_RATE_LIMIT.
 */
export function dnsTopology(registry: ServiceRegistry = defaultRegistry): EnvoyTopology {
  const topology = frontDoorTopology(
    Object.fromEntries(
      registry.services.map((service) => [
        service.name,
        [{ host: service.name, port: service.port }],
      ]),
    ),
    registry,
  );
  return {
    ...topology,
    listen: { address: "0.0.0.0", port: topology.listen.port },
    rateLimit: EDGE_RATE_LIMIT,
  };
}

/**
 * Where compose mounts its secrets (deploy/compose.ts): the edge's certificate and key, the CA,
 * the JWKS.
 */
export const COMPOSE_SECRETS = "/run/secrets";

/**
 * docker compose: one DNS name per service (scale with `--scale`), the descriptor set mounted at
 * /app/gen/descriptor, the credentials mounted as secrets, issuer and audience as `npm run certs
 * -- --production` makes them unless SHOP_JWT_ISSUER and SHOP_JWT_AUDIENCE say otherwise when the
 * file is generated.
 */
export function composeTopology(
  registry = defaultRegistry,
  tracing: Readonly<Record<string, string>> = TRACING_SETTINGS,
): EnvoyTopology {
  const tracer = envoyTracing(tracing);
  return {
    ...dnsTopology(registry),
    ...(tracer && { tracing: tracer }),
    // Scrapers on the compose network reach the stats listener; the admin stays on loopback.
    stats: { address: "0.0.0.0", port: 9902 },
    descriptorPath: `/app/${DESCRIPTOR}`,
    tls: {
      cert: `${COMPOSE_SECRETS}/edge_cert`,
      key: `${COMPOSE_SECRETS}/edge_key`,
      ca: `${COMPOSE_SECRETS}/mesh_ca`,
    },
    jwt: { jwksPath: `${COMPOSE_SECRETS}/jwks`, issuer: PRODUCTION_ISSUER, audience: DEV_AUDIENCE },
  };
}

/**
 * Envoy's tracer, from the same OTEL_* variables the services read (kit/observability/tracing.ts): spans go to
 * the OTLP/gRPC endpoint when traces are exported over gRPC, sampled at the services' ratio.
 */
export function envoyTracing(
  env: Readonly<Record<string, string | undefined>>,
): EnvoyTopology["tracing"] | undefined {
  const endpoint = otlpEndpoint(env);
  if (endpoint?.protocol !== "grpc") return undefined;
  const url = new URL(endpoint.url);
  const tls = url.protocol === "https:";
  const headers = otlpHeaders(env);
  return {
    // An IPv6 literal without its brackets, as Envoy's socket address takes it.
    collector: {
      host: url.hostname.replace(/^\[(.*)\]$/, "$1"),
      port: Number(url.port || (tls ? 443 : 4317)),
    },
    samplePercent: sampleRatio(env) * 100,
    ...(tls && { tls }),
    ...(Object.keys(headers).length > 0 && { headers }),
  };
}

/**
 * The headers of every OTLP export, as the services' exporter reads them: `key=value` pairs,
 * comma-separated and percent-encoded; OTEL_EXPORTER_OTLP_TRACES_HEADERS over
 * OTEL_EXPORTER_OTLP_HEADERS, key by key.
 */
function otlpHeaders(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const headers: Record<string, string> = {};
  for (const list of [env.OTEL_EXPORTER_OTLP_HEADERS, env.OTEL_EXPORTER_OTLP_TRACES_HEADERS]) {
    for (const pair of (list ?? "").split(",")) {
      const at = pair.indexOf("=");
      if (at <= 0) continue;
      headers[decodeURIComponent(pair.slice(0, at).trim()).toLowerCase()] = decodeURIComponent(
        pair.slice(at + 1).trim(),
      );
    }
  }
  return headers;
}
