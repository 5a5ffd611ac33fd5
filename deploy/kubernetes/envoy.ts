// Envoy in the cluster: its topology (the config of the envoy ConfigMap), its Deployment, Service
// and NetworkPolicy.

import type { ServiceRegistry } from "../../kit/registry.js";
import { registry as defaultRegistry } from "../../services/registry.js";
import { drainScript, ENVOY_CALLS_S } from "../envoy/stop.js";
import {
  dnsTopology,
  ENVOY_ADMIN_PORT,
  type EnvoyTopology,
  envoyTracing,
} from "../envoy/topology.js";
import {
  CLUSTER_CORS_ORIGINS,
  DESCRIPTOR_IN_IMAGE,
  EDGE_IDENTITY,
  ENVOY_IMAGE,
  ENVOY_MEMORY_LIMIT_MIB,
  ENVOY_MEMORY_REQUEST_MIB,
  ENVOY_UID,
  IMAGE,
  JWKS_SECRET,
  JWT_SETTINGS,
  type SecretMount,
  TLS_SECRET,
  TRACING_SETTINGS,
} from "../settings.js";
import { labels, selector } from "./labels.js";
import { scrapers } from "./network.js";
import { OVERLAYS } from "./overlays.js";
import { containerSecurity, meshMounts, podSecurity, SURGE, scrape, spread } from "./pods.js";

/** Envoy's CPU limit in cores, and so its worker threads (its default is one per node core). */
export const ENVOY_CPU_CORES = 1;

/** The front door's ports inside the cluster. */
export const ENVOY_PORT = 8080;
/** Envoy's stats listener: GET /metrics in Prometheus's format, nothing of the admin interface. */
export const ENVOY_STATS_PORT = 9902;

const DESCRIPTOR_DIR = "/descriptor";

/**
 * Seconds Envoy keeps accepting connections once told to stop, telling each to go away: long
 * enough for a cloud load balancer's health checks to see the node has no ready Envoy (about
 * 20 s on common defaults, with the production overlay's `externalTrafficPolicy: Local`).
 */
export const ENVOY_DRAIN_S = 20;

/**
 * Envoy's listener is the front door: open to any client; its stats listener to the monitoring
 * namespaces; its admin port stays on loopback.
 */
export const envoyPolicy = {
  apiVersion: "networking.k8s.io/v1",
  kind: "NetworkPolicy",
  metadata: { name: "envoy", labels: labels("envoy", "edge") },
  spec: {
    podSelector: { matchLabels: selector("envoy") },
    policyTypes: ["Ingress"],
    ingress: [{ ports: [{ protocol: "TCP", port: ENVOY_PORT }] }, scrapers(ENVOY_STATS_PORT)],
  },
};

/** A mounted Secret's file, by its key. */
const mounted = (mount: SecretMount, key: string) => `${mount.mountPath}/${key}`;

/**
 * Envoy in the cluster: every public service by the DNS name of its headless Service, TLS at the
 * edge and mutual TLS to the services with the edge's identity, tokens of JWT_SETTINGS checked.
 */
export function kubernetesTopology(
  registry: ServiceRegistry = defaultRegistry,
  tracing: Readonly<Record<string, string>> = TRACING_SETTINGS,
): EnvoyTopology {
  const tracer = envoyTracing(tracing);
  return {
    ...dnsTopology(registry),
    ...(tracer && { tracing: tracer }),
    listen: { address: "0.0.0.0", port: ENVOY_PORT },
    admin: { address: "127.0.0.1", port: ENVOY_ADMIN_PORT },
    stats: { address: "0.0.0.0", port: ENVOY_STATS_PORT },
    descriptorPath: `${DESCRIPTOR_DIR}/shop.binpb`,
    tls: {
      cert: mounted(TLS_SECRET, "tls.crt"),
      key: mounted(TLS_SECRET, "tls.key"),
      ca: mounted(TLS_SECRET, "ca.crt"),
    },
    jwt: {
      jwksPath: mounted(JWKS_SECRET, "jwks.json"),
      issuer: JWT_SETTINGS.SHOP_JWT_ISSUER as string,
      audience: JWT_SETTINGS.SHOP_JWT_AUDIENCE as string,
    },
    corsOrigins: [...CLUSTER_CORS_ORIGINS],
  };
}

/** Envoy's preStop hook: drain, then wait for the calls in flight (deploy/envoy/stop.ts). */
export const ENVOY_PRESTOP = drainScript(ENVOY_DRAIN_S);

export function envoyDeployment() {
  const mounts = meshMounts(EDGE_IDENTITY);
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "envoy", labels: labels("envoy", "edge") },
    spec: {
      replicas: OVERLAYS.production.replicas,
      revisionHistoryLimit: 5,
      // A rollout stops the next old Envoy only once the load balancer can have seen this one.
      minReadySeconds: ENVOY_DRAIN_S,
      selector: { matchLabels: selector("envoy") },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: SURGE } },
      template: {
        metadata: { labels: labels("envoy", "edge"), annotations: scrape(ENVOY_STATS_PORT) },
        spec: {
          serviceAccountName: "envoy",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: ENVOY_DRAIN_S + ENVOY_CALLS_S + 5,
          securityContext: podSecurity(ENVOY_UID),
          topologySpreadConstraints: spread("envoy"),
          // The transcoder needs the descriptor set of the very image the services run.
          initContainers: [
            {
              name: "descriptor",
              image: IMAGE,
              imagePullPolicy: "IfNotPresent",
              command: ["cp", DESCRIPTOR_IN_IMAGE, `${DESCRIPTOR_DIR}/shop.binpb`],
              resources: {
                requests: { cpu: "10m", memory: "16Mi" },
                limits: { cpu: "100m", memory: "32Mi" },
              },
              securityContext: containerSecurity,
              volumeMounts: [{ name: "descriptor", mountPath: DESCRIPTOR_DIR }],
            },
          ],
          containers: [
            {
              name: "envoy",
              image: ENVOY_IMAGE,
              imagePullPolicy: "IfNotPresent",
              command: ["envoy"],
              args: [
                ...["-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart"],
                ...["--drain-time-s", String(ENVOY_DRAIN_S), "--log-level", "info"],
                ...["--concurrency", String(ENVOY_CPU_CORES)],
              ],
              ports: [
                { name: "http", containerPort: ENVOY_PORT, protocol: "TCP" },
                { name: "metrics", containerPort: ENVOY_STATS_PORT, protocol: "TCP" },
              ],
              // The admin's /ready through the stats listener: no process per probe.
              readinessProbe: {
                httpGet: { path: "/ready", port: ENVOY_STATS_PORT },
                periodSeconds: 5,
                timeoutSeconds: 2,
              },
              livenessProbe: {
                tcpSocket: { port: ENVOY_PORT },
                periodSeconds: 10,
                failureThreshold: 3,
              },
              lifecycle: { preStop: { exec: { command: ["bash", "-c", ENVOY_PRESTOP] } } },
              resources: {
                requests: { cpu: "100m", memory: `${ENVOY_MEMORY_REQUEST_MIB}Mi` },
                limits: { cpu: String(ENVOY_CPU_CORES), memory: `${ENVOY_MEMORY_LIMIT_MIB}Mi` },
              },
              securityContext: containerSecurity,
              volumeMounts: [
                { name: "config", mountPath: "/etc/envoy", readOnly: true },
                { name: "descriptor", mountPath: DESCRIPTOR_DIR, readOnly: true },
                { name: "tmp", mountPath: "/tmp" },
                // Envoy reads these by the paths its config names, not from variables.
                ...mounts.map((mount) => mount.mount),
              ],
            },
          ],
          volumes: [
            { name: "config", configMap: { name: "envoy" } },
            { name: "descriptor", emptyDir: { sizeLimit: "16Mi" } },
            { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
            ...mounts.map((mount) => mount.volume),
          ],
        },
      },
    },
  };
}

export const envoyService = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "envoy", labels: labels("envoy", "edge") },
  spec: {
    selector: selector("envoy"),
    ports: [{ name: "http", port: ENVOY_PORT, targetPort: "http", protocol: "TCP" }],
  },
};
