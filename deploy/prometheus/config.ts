// Prometheus's scrape configuration, derived from the registry: one job per registered service
// (job="<name>", a target per replica's metrics port) and one for Envoy's stats listener.
// `npm run mesh -- --observe` writes it for its own ports; deploy/prometheus/prometheus.yml is the
// committed copy for the default ports, and kubernetes.yml the one for a cluster. The rules beside
// them (rules.yml) read these job names.
import { stringify } from "yaml";
import { metricsPortFor, type ServiceRegistry } from "../../kit/registry.js";
import { registry as defaultRegistry } from "../../services/registry.js";

/** What Prometheus scrapes: `host:port` of every replica's metrics, by service, and Envoy's. */
export interface ScrapeTargets {
  services: Record<string, readonly string[]>;
  /** Envoy's stats listener (GET /metrics), when there is an Envoy. */
  envoy?: string;
}

export interface PrometheusOptions {
  /** How often every target is scraped; 15 s by default. */
  scrapeInterval?: string;
  /** Rule files, as Prometheus opens them. */
  ruleFiles?: readonly string[];
}

/** The Prometheus configuration for `targets`, as a plain object. */
export function prometheusConfig(
  targets: ScrapeTargets,
  options: PrometheusOptions = {},
  registry: ServiceRegistry = defaultRegistry,
): Record<string, unknown> {
  const interval = options.scrapeInterval ?? "15s";
  const jobs = registry.services.map((service) => ({
    job_name: service.name,
    static_configs: [{ targets: [...(targets.services[service.name] ?? [])] }],
  }));
  return {
    global: { scrape_interval: interval, evaluation_interval: interval },
    ...(options.ruleFiles && { rule_files: [...options.ruleFiles] }),
    scrape_configs: [
      ...jobs,
      ...(targets.envoy
        ? [{ job_name: "envoy", static_configs: [{ targets: [targets.envoy] }] }]
        : []),
    ],
  };
}

/**
 * Prometheus's scrape configuration inside a cluster running deploy/k8s: every shopmesh pod that
 * asks to be scraped (its prometheus.io annotations), with `job` its app.kubernetes.io/name (user,
 * product, order, envoy) as the rules and the dashboard read it, and `instance` its pod. The
 * usual annotation-driven job gives every pod one job name, which merges the services.
 */
export function kubernetesPrometheusConfig(
  options: PrometheusOptions = {},
): Record<string, unknown> {
  const interval = options.scrapeInterval ?? "15s";
  const pod = (name: string) => `__meta_kubernetes_pod_${name}`;
  return {
    global: { scrape_interval: interval, evaluation_interval: interval },
    ...(options.ruleFiles && { rule_files: [...options.ruleFiles] }),
    scrape_configs: [
      {
        job_name: "shopmesh",
        kubernetes_sd_configs: [{ role: "pod" }],
        relabel_configs: [
          {
            source_labels: [pod("label_app_kubernetes_io_part_of")],
            regex: "shopmesh",
            action: "keep",
          },
          {
            source_labels: [pod("annotation_prometheus_io_scrape")],
            regex: "true",
            action: "keep",
          },
          // The pod's IP and its annotated port; an IPv6 address in brackets.
          {
            source_labels: [pod("ip"), pod("annotation_prometheus_io_port")],
            regex: "([0-9.]+);(\\d+)",
            replacement: "$1:$2",
            target_label: "__address__",
          },
          {
            source_labels: [pod("ip"), pod("annotation_prometheus_io_port")],
            regex: "([0-9A-Fa-f:]*:[0-9A-Fa-f:]*);(\\d+)",
            replacement: "[$1]:$2",
            target_label: "__address__",
          },
          {
            source_labels: [pod("annotation_prometheus_io_path")],
            regex: "(.+)",
            target_label: "__metrics_path__",
          },
          { source_labels: [pod("label_app_kubernetes_io_name")], target_label: "job" },
          { source_labels: [pod("name")], target_label: "instance" },
          { source_labels: ["__meta_kubernetes_namespace"], target_label: "namespace" },
        ],
      },
    ],
  };
}

/** `prometheusConfig` as YAML text, with a header saying where it came from. */
export function prometheusYaml(
  targets: ScrapeTargets,
  options: PrometheusOptions = {},
  header = "",
): string {
  return header + stringify(prometheusConfig(targets, options), { lineWidth: 0 });
}

/** `kubernetesPrometheusConfig` as YAML text, with a header saying where it came from. */
export function kubernetesPrometheusYaml(options: PrometheusOptions = {}, header = ""): string {
  return header + stringify(kubernetesPrometheusConfig(options), { lineWidth: 0 });
}

/**
 * The targets of `npm run mesh` on its default ports: `replicas` of every service, replica i's
 * metrics on its registry metrics port + 10 × (i − 1), and Envoy's stats listener on :9902.
 */
export function localTargets(replicas = 2, registry = defaultRegistry): ScrapeTargets {
  return {
    services: Object.fromEntries(
      registry.services.map((service) => [
        service.name,
        Array.from(
          { length: replicas },
          (_, i) => `127.0.0.1:${metricsPortFor(service, service.port + 10 * i)}`,
        ),
      ]),
    ),
    envoy: "127.0.0.1:9902",
  };
}
