// How many pods run: a disruption budget per workload, and production's autoscalers on CPU.

import { labels, selector } from "./labels.js";
import { OVERLAYS } from "./overlays.js";

/**
 * The CPU each production pod requests: half a core. A service serves on one thread (its limit
 * is one core), and its queue grows well before that thread is busy all the time.
 */
export const PRODUCTION_CPU_REQUEST = "500m";

/** The share of its CPU request a production pod may average before its autoscaler adds one. */
export const SCALE_AT_UTILIZATION = 80;

/** A voluntary disruption (a node drain) takes at most one pod of a service at a time. */
export function disruptionBudget(name: string, component: "service" | "edge") {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: { name, labels: labels(name, component) },
    spec: {
      maxUnavailable: 1,
      selector: { matchLabels: selector(name) },
      unhealthyPodEvictionPolicy: "AlwaysAllow",
    },
  };
}

/**
 * Production's autoscaler of a Deployment, on CPU. It removes one pod a minute at most: each pod
 * that goes drains its calls first, and its callers connect again elsewhere.
 */
export function autoscaler(name: string, component: "service" | "edge") {
  const { replicas, maxReplicas } = OVERLAYS.production;
  return {
    apiVersion: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    metadata: { name, labels: labels(name, component) },
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name },
      minReplicas: replicas,
      maxReplicas,
      metrics: [
        {
          type: "Resource",
          resource: {
            name: "cpu",
            target: { type: "Utilization", averageUtilization: SCALE_AT_UTILIZATION },
          },
        },
      ],
      behavior: {
        scaleDown: {
          stabilizationWindowSeconds: 300,
          policies: [{ type: "Pods", value: 1, periodSeconds: 60 }],
        },
      },
    },
  };
}
