// The upstream clusters, one per public service: replicas, balancing, health checks, outlier
// detection and circuit breakers; and the one that serves health and reflection.

import { MAX_CONCURRENT_STREAMS } from "../../kit/transport/limits.js";
import { typed } from "./matchers.js";
import { upstreamTls } from "./tls.js";
import type { Endpoint, EnvoyTopology } from "./topology.js";

/** A duration as Envoy reads one: "1.5s". */
export const seconds = (ms: number) => `${ms / 1000}s`;

export function cluster(
  name: string,
  serviceName: string,
  endpoints: readonly Endpoint[],
  intervalMs: number,
  tls: EnvoyTopology["tls"],
) {
  const dns = endpoints.some((endpoint) => !isIpLiteral(endpoint.host));
  return {
    name,
    ...(tls && { transport_socket: upstreamTls(tls, name) }),
    // Names are resolved continuously, and every address a name returns is a replica (compose
    // `--scale`, a Kubernetes headless Service); IP literals need no DNS at all.
    type: dns ? "STRICT_DNS" : "STATIC",
    ...(dns ? { dns_lookup_family: "V4_PREFERRED" } : {}),
    connect_timeout: "1s",
    // LEAST_REQUEST (power of two choices): Envoy multiplexes every call to a replica over one
    // HTTP/2 connection per worker, so connection-level balancing cannot spread load; per-request
    // balancing can, and least-request steers calls away from a replica that is slow right now
    // (a CreateOrder waiting on its dependencies, a cold SQLite page cache) where round robin would
    // keep feeding it. With equal load it spreads like random, so every replica gets traffic.
    lb_policy: "LEAST_REQUEST",
    // Health changes reach the workers that balance calls at once. By default Envoy holds back
    // every change that follows another within a second, for clusters of thousands of hosts: a
    // replica back from a failed check then got no calls for up to a second, or one taken out
    // kept getting them, though the admin interface already showed it so.
    common_lb_config: { update_merge_window: "0s" },
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        {
          explicit_http_config: {
            http2_protocol_options: {
              connection_keepalive: { interval: "30s", timeout: "5s" },
              // The replicas' own bound: past it, Envoy opens another connection, where a
              // call would otherwise wait inside one it counts as free.
              max_concurrent_streams: MAX_CONCURRENT_STREAMS,
            },
          },
        },
      ),
    },
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: endpoints.map((endpoint) => ({
            endpoint: {
              address: { socket_address: { address: endpoint.host, port_value: endpoint.port } },
            },
          })),
        },
      ],
    },
    health_checks: [
      {
        timeout: "1s",
        interval: seconds(intervalMs),
        // Envoy checks an idle cluster only every 60 s by default: a replica restarted before any
        // traffic would stay out that long.
        no_traffic_interval: seconds(intervalMs),
        unhealthy_threshold: 2,
        healthy_threshold: 1,
        grpc_health_check: { service_name: serviceName },
      },
    ],
    // Passive checks between active ones. gRPC statuses count by their HTTP mapping: UNAVAILABLE
    // is a gateway failure (503), INTERNAL/UNKNOWN are 5xx; NOT_FOUND and the like never count.
    outlier_detection: {
      consecutive_5xx: 5,
      consecutive_gateway_failure: 3,
      // Envoy only counts gateway failures unless told to enforce them.
      enforcing_consecutive_gateway_failure: 100,
      // What Envoy saw itself (a connect failure or timeout, a read's per-try timeout, a reset)
      // counts apart from what replicas answered, and never ejects: a replica that pauses for
      // half a second under hedged reads has a run of per-try timeouts just as a hung one has,
      // and ejecting it could leave only the hung one in rotation (CI saw 22 reads fail so).
      // Retries and hedges cover such a replica's calls; active health checks take it out.
      split_external_local_origin_errors: true,
      enforcing_consecutive_local_origin_failure: 0,
      enforcing_local_origin_success_rate: 0,
      interval: "2s",
      base_ejection_time: "10s",
      max_ejection_time: "60s",
      max_ejection_percent: 50,
    },
    circuit_breakers: {
      thresholds: [
        {
          priority: "DEFAULT",
          max_connections: 1024,
          max_pending_requests: 1024,
          max_requests: 4096,
          // Retries may add at most 20% load on top of the active requests, so retries cannot
          // amplify an overload; at least 100 at a time, so that a replica lost under light load
          // is covered: a retry holds its slot through its backoff, and the calls waiting for a
          // connection to a hung replica all fail at once when it times out (a floor of 3, then
          // of 10, failed calls that a retry would have served: CI once, then 42 of a burst of
          // 60 reads as one replica was SIGSTOPped).
          retry_budget: { budget_percent: { value: 20 }, min_retry_concurrency: 100 },
          track_remaining: true,
        },
      ],
    },
  };
}

export function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":");
}

/** Health and reflection go to the first cluster (in registry order) that has replicas. */
export function infraCluster(clusterNames: readonly string[], topology: EnvoyTopology): string {
  const withReplicas = clusterNames.find((name) => (topology.services[name]?.length ?? 0) > 0);
  return withReplicas ?? (clusterNames[0] as string);
}
