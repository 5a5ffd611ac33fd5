// The labels every object of deploy/k8s carries, and the selector that finds a workload's pods.

export const PART_OF = "shopmesh";

export const labels = (name: string, component: "service" | "edge") => ({
  "app.kubernetes.io/name": name,
  "app.kubernetes.io/component": component,
  "app.kubernetes.io/part-of": PART_OF,
});
export const selector = (name: string) => ({ "app.kubernetes.io/name": name });
