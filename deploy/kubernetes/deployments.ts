// A service's Deployment: native gRPC probes, a restricted securityContext, a termination grace
// that covers the server's shutdown grace.

import type { RegisteredService, ServiceRegistry } from "../../kit/registry.js";
import { serviceVariable } from "../../kit/registry.js";
import {
  APP_UID,
  DATA_DIR,
  healthPortOf,
  IMAGE,
  SERVICE_MEMORY_LIMIT_MIB,
  SERVICE_MEMORY_REQUEST_MIB,
  STOP_GRACE_S,
} from "../settings.js";
import { labels, selector } from "./labels.js";
import { containerSecurity, meshMounts, podSecurity, SURGE, scrape, spread } from "./pods.js";

export const CONFIG_MAP = "shopmesh";

/** Seconds a pod keeps serving after it is told to stop, while it leaves the endpoints. */
export const PRE_STOP_SLEEP_S = 5;

/**
 * Kubernetes kills a pod this long after it starts stopping: the preStop sleep, then the
 * server's NOT_SERVING announcement, whole shutdown grace and close (STOP_GRACE_S).
 */
export const TERMINATION_GRACE_S = PRE_STOP_SLEEP_S + STOP_GRACE_S;

/** The proto service a readiness probe and Envoy's health check ask about. */
const checkedService = (service: RegisteredService) => service.protoServices[0] as string;

export function serviceDeployment(service: RegisteredService, registry: ServiceRegistry) {
  const { name, port } = service;
  const health = healthPortOf(port);
  const mounts = meshMounts(name);
  const env = [
    { name: "SHOP_SERVICE", value: name },
    { name: "SHOP_PORT", value: String(port) },
    { name: "SHOP_HEALTH_PORT", value: String(health) },
    { name: "SHOP_METRICS_PORT", value: String(service.metricsPort) },
    ...mounts.flatMap((mount) => mount.env),
    // A DNS name of a headless Service: every ready pod is an address, balanced round_robin.
    ...service.dependencies.map((dependency) => ({
      name: serviceVariable(dependency, "ADDR"),
      value: `${dependency}:${registry.get(dependency).port}`,
    })),
  ];
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, labels: labels(name, "service") },
    spec: {
      // One pod on the base's own: more share data only through the PostgreSQL the production
      // overlay gives them, and each would have a SQLite file of its own.
      replicas: 1,
      revisionHistoryLimit: 5,
      selector: { matchLabels: selector(name) },
      // A new pod is ready before an old one stops.
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: SURGE } },
      // A new pod counts as available, and the rollout goes on to the next, only once the old
      // one it replaced has had all its time to stop: one pod at a time is stopping, its pool
      // open (the production pool budget counts one).
      minReadySeconds: TERMINATION_GRACE_S,
      template: {
        metadata: { labels: labels(name, "service"), annotations: scrape(service.metricsPort) },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          // No <SERVICE>_PORT variables from the cluster's Services in the environment.
          enableServiceLinks: false,
          terminationGracePeriodSeconds: TERMINATION_GRACE_S,
          securityContext: podSecurity(APP_UID),
          topologySpreadConstraints: spread(name),
          containers: [
            {
              name,
              image: IMAGE,
              imagePullPolicy: "IfNotPresent",
              ports: [
                { name: "grpc", containerPort: port, protocol: "TCP" },
                { name: "health", containerPort: health, protocol: "TCP" },
                { name: "metrics", containerPort: service.metricsPort, protocol: "TCP" },
              ],
              envFrom: [{ configMapRef: { name: CONFIG_MAP } }],
              env,
              // grpc.health.v1, asked by the kubelet itself: no process per probe. The service
              // port asks for a mesh certificate, which the kubelet cannot present, so it asks the
              // health-only port (SHOP_HEALTH_PORT, the same statuses, nothing else served).
              // Startup allows for migrations; readiness is the proto service's status,
              // NOT_SERVING from the first moment of a shutdown; liveness the server's ("").
              // Only a shutdown turns a service NOT_SERVING, and its pod leaves the endpoints
              // as it terminates anyway: readiness takes three misses, so that one slow answer
              // under load (a throttled CPU, a long collection) takes no pod out, nor every pod.
              startupProbe: { grpc: { port: health }, periodSeconds: 1, failureThreshold: 60 },
              readinessProbe: {
                grpc: { port: health, service: checkedService(service) },
                periodSeconds: 2,
                timeoutSeconds: 2,
                failureThreshold: 3,
              },
              livenessProbe: {
                grpc: { port: health },
                periodSeconds: 10,
                timeoutSeconds: 2,
                failureThreshold: 3,
              },
              // Keep serving while the endpoints (and the callers' DNS) drop this pod; SIGTERM
              // then turns health NOT_SERVING (SHOP_SHUTDOWN_ANNOUNCE_MS), then refuses new calls
              // and drains those in flight (SHOP_SHUTDOWN_GRACE_MS).
              lifecycle: { preStop: { sleep: { seconds: PRE_STOP_SLEEP_S } } },
              resources: {
                requests: { cpu: "100m", memory: `${SERVICE_MEMORY_REQUEST_MIB}Mi` },
                limits: { cpu: "1", memory: `${SERVICE_MEMORY_LIMIT_MIB}Mi` },
              },
              securityContext: containerSecurity,
              volumeMounts: [
                { name: "data", mountPath: DATA_DIR },
                { name: "tmp", mountPath: "/tmp" },
                ...mounts.map((mount) => mount.mount),
              ],
            },
          ],
          volumes: [
            { name: "data", emptyDir: {} },
            { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
            ...mounts.map((mount) => mount.volume),
          ],
        },
      },
    },
  };
}
