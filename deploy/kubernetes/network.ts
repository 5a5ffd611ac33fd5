// Who reaches what: a headless Service per service, and the NetworkPolicies of the trust model.

import type { RegisteredService, ServiceRegistry } from "../../kit/registry.js";
import { labels, PART_OF, selector } from "./labels.js";

/** Namespaces with these labels may scrape the metrics ports (NetworkPolicies). */
export const MONITORING_NAMESPACE_LABELS = { "shopmesh.io/monitoring": "true" };

/** Headless: DNS answers with every ready pod, so Envoy and round_robin callers see them all. */
export function headlessService(service: RegisteredService) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: service.name, labels: labels(service.name, "service") },
    spec: {
      clusterIP: "None",
      selector: selector(service.name),
      ports: [
        {
          name: "grpc",
          port: service.port,
          targetPort: "grpc",
          // No appProtocol: kubernetes.io/h2c means cleartext, and this port serves mutual TLS.
          protocol: "TCP",
        },
      ],
    },
  };
}

/**
 * Who may open a connection to a service's port: Envoy for a public service, and the services
 * that call it (the registry's dependencies). The port is the unit here; which rpcs an identity
 * may call on it (the internal inventory API of the product process, for one) is checked by the
 * service against the caller's mTLS identity.
 */
export function callersOf(service: RegisteredService, registry: ServiceRegistry): string[] {
  return [
    ...(service.publicServices.length > 0 ? ["envoy"] : []),
    ...registry.services
      .filter((caller) => caller.dependencies.includes(service.name))
      .map((caller) => caller.name),
  ];
}

export function servicePolicy(service: RegisteredService, registry: ServiceRegistry) {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name: service.name, labels: labels(service.name, "service") },
    spec: {
      podSelector: { matchLabels: selector(service.name) },
      policyTypes: ["Ingress"],
      ingress: [
        {
          from: callersOf(service, registry).map((caller) => ({
            podSelector: { matchLabels: selector(caller) },
          })),
          ports: [{ protocol: "TCP", port: service.port }],
        },
        scrapers(service.metricsPort),
      ],
    },
  };
}

/** The metrics port, open to the namespaces labelled as monitoring (where Prometheus runs). */
export const scrapers = (port: number) => ({
  from: [{ namespaceSelector: { matchLabels: MONITORING_NAMESPACE_LABELS } }],
  ports: [{ protocol: "TCP", port }],
});

/** Nothing reaches a pod of the namespace unless a policy below lets it. */
export const defaultDeny = {
  apiVersion: "networking.k8s.io/v1",
  kind: "NetworkPolicy",
  metadata: { name: "default-deny-ingress", labels: { "app.kubernetes.io/part-of": PART_OF } },
  spec: { podSelector: {}, policyTypes: ["Ingress"] },
};
