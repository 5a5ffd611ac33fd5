// Observability: gRPC stats per method, Prometheus stats on a listener of their own, and the
// OpenTelemetry tracer. Each piece is one function config.ts composes.

import { isIpLiteral } from "./clusters.js";
import { headerMatches, not, skippedFor, typed } from "./matchers.js";
import type { Endpoint, EnvoyTopology, GrpcService } from "./topology.js";

/**
 * Envoy's grpc_stats filter: per-method counts by status (`envoy_cluster_grpc_*` in Prometheus)
 * and upstream times for every routed rpc, named in an allowlist so an unknown path cannot grow
 * the stats without bound. Before jwt_authn and rbac, so their refusals are counted too.
 */
export function grpcStats(services: readonly GrpcService[]) {
  return {
    name: "envoy.filters.http.grpc_stats",
    typed_config: typed("envoy.extensions.filters.http.grpc_stats.v3.FilterConfig", {
      emit_filter_state: true,
      enable_upstream_stats: true,
      individual_method_stats_allowlist: {
        services: services.map((service) => ({
          name: service.fullName,
          method_names: service.methods.map((method) => method.rpc),
        })),
      },
    }),
  };
}

/** Envoy's default stat tags that the mesh's stats use; the gRPC ones are grpcStatsTags's own. */
const DEFAULT_TAGS = [
  "envoy.cluster_name",
  "envoy.listener_address",
  "envoy.http_conn_manager_prefix",
  "envoy.response_code",
  "envoy.response_code_class",
  "envoy.virtual_host",
  "envoy.virtual_cluster",
  "envoy.ssl_cipher",
  "envoy.http_user_agent",
  "envoy.rds_route_config",
  "envoy.worker_id",
  "envoy.tcp_prefix",
];

/**
 * Tags for grpc_stats' per-method stats (`cluster.<cluster>.grpc.<service>.<method>.<stat>`): the
 * whole proto service name and the method, as `envoy_grpc_bridge_service` and
 * `envoy_grpc_bridge_method` labels of `envoy_cluster_grpc_<stat>`. Envoy's default extractors of
 * these two stop at the first dot and split `shop.order.v1.OrderService` apart, and defaults run
 * before custom tags, so the defaults are named one by one instead, without those two.
 */
export function grpcStatsTags(clusters: readonly string[]) {
  return {
    stats_config: {
      // The grpc_web filter names stats after any path a caller sends
      // (`cluster.<cluster>.grpc-web.<service>.<method>.*`), so they are not kept: grpc_stats
      // counts gRPC-Web calls too, under its allowlist. A prefix ending in a dot is rejected
      // before the stat is made.
      stats_matcher: {
        exclusion_list: {
          patterns: clusters.map((cluster) => ({ prefix: `cluster.${cluster}.grpc-web.` })),
        },
      },
      use_all_default_tags: false,
      stats_tags: [
        ...DEFAULT_TAGS.map((tag_name) => ({ tag_name })),
        {
          tag_name: "envoy.grpc_bridge_service",
          regex: "^cluster\\.[^.]+\\.grpc\\.((.+)\\.)[^.]+\\.[^.]+$",
        },
        {
          tag_name: "envoy.grpc_bridge_method",
          regex: "^cluster\\.[^.]+\\.grpc\\..+\\.(([^.]+)\\.)[^.]+$",
        },
      ],
    },
  };
}

const ADMIN_CLUSTER = "envoy_admin";
const COLLECTOR_CLUSTER = "opentelemetry_collector";

/**
 * A GET of `path` with no query string. A route's path match ignores the query, which the admin
 * would read: /metrics?filter=<regex> runs a regex over every stat name per request.
 */
const bareGet = (path: string) => ({
  path,
  headers: [
    { name: ":method", string_match: { exact: "GET" } },
    { name: ":path", string_match: { exact: path } },
  ],
});

/**
 * The stats listener: GET /metrics answers Envoy's Prometheus stats (the admin's
 * /stats/prometheus, reached over loopback), and GET /ready the admin's readiness (200 when
 * LIVE), for the kubelet's probe; every other path, and either with a query string, is 404, so a
 * scraper that can reach it reaches nothing else of the admin interface.
 */
export function statsListener(topology: EnvoyTopology) {
  if (!topology.stats) return [];
  const { address, port } = topology.stats;
  return [
    {
      name: "stats",
      address: { socket_address: { address, port_value: port } },
      filter_chains: [
        {
          filters: [
            {
              name: "envoy.filters.network.http_connection_manager",
              typed_config: typed(
                "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                {
                  stat_prefix: "stats",
                  route_config: {
                    virtual_hosts: [
                      {
                        name: "stats",
                        domains: ["*"],
                        routes: [
                          {
                            match: bareGet("/metrics"),
                            route: { cluster: ADMIN_CLUSTER, prefix_rewrite: "/stats/prometheus" },
                          },
                          { match: bareGet("/ready"), route: { cluster: ADMIN_CLUSTER } },
                          {
                            match: { prefix: "/" },
                            direct_response: {
                              status: 404,
                              body: { inline_string: "not found; try /metrics\n" },
                            },
                          },
                        ],
                      },
                    ],
                  },
                  http_filters: [
                    {
                      name: "envoy.filters.http.router",
                      typed_config: typed("envoy.extensions.filters.http.router.v3.Router"),
                    },
                  ],
                },
              ),
            },
          ],
        },
      ],
    },
  ];
}

/**
 * The REST path the transcoder keeps for the tracer (x-envoy-original-path), without its query:
 * the edge span's http.url would otherwise carry the caller's query (ids, page tokens, whatever
 * it sent), which the access log leaves out. After the transcoder, which has read the query;
 * skipped for every request without the header. Only where the edge traces.
 */
export function queryFreeSpans(topology: EnvoyTopology) {
  if (!topology.tracing) return [];
  const header = "x-envoy-original-path";
  return [
    skippedFor(not(headerMatches(header, { prefix: "/" })), {
      name: "envoy.filters.http.header_mutation",
      typed_config: typed("envoy.extensions.filters.http.header_mutation.v3.HeaderMutation", {
        mutations: {
          request_mutations: [
            {
              append: {
                header: { key: header, value: "%PATH(NQ:ORIG)%" },
                append_action: "OVERWRITE_IF_EXISTS",
              },
            },
          ],
        },
      }),
    }),
  ];
}

const SAMPLERS = "envoy.extensions.tracers.opentelemetry.samplers.v3";

/**
 * How the edge treats x-request-id: a caller's own is kept as it came (preserve_external_request_id),
 * so Envoy must not write its trace decision into one 36 characters long, as it does by default,
 * taking it for a UUID; and it samples at random, not by the id, which a caller chose.
 */
export const edgeRequestIds = () => ({
  request_id_extension: {
    typed_config: typed("envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", {
      pack_trace_reason: false,
      use_request_id_for_trace_sampling: false,
    }),
  },
});

/** The HTTP connection manager's tracing: Envoy's OpenTelemetry tracer, W3C trace context. */
export function edgeTracing(topology: EnvoyTopology) {
  if (!topology.tracing) return {};
  return {
    tracing: {
      // Every request goes to the tracer's sampler, which decides.
      random_sampling: { value: 100 },
      provider: {
        name: "envoy.tracers.opentelemetry",
        typed_config: typed("envoy.config.trace.v3.OpenTelemetryConfig", {
          grpc_service: {
            envoy_grpc: { cluster_name: COLLECTOR_CLUSTER },
            timeout: "1s",
            ...(topology.tracing.headers && {
              initial_metadata: Object.entries(topology.tracing.headers).map(([key, value]) => ({
                key,
                value,
              })),
            }),
          },
          service_name: "envoy",
          // The services' sampler: a caller's decision stands, and samplePercent of new traces
          // are sampled. Without one, the tracer sampled every new trace once the request id
          // did not decide, whatever random_sampling said.
          sampler: {
            name: "envoy.tracers.opentelemetry.samplers.parent_based",
            typed_config: typed(`${SAMPLERS}.ParentBasedSamplerConfig`, {
              wrapped_sampler: {
                name: "envoy.tracers.opentelemetry.samplers.trace_id_ratio_based",
                typed_config: typed(`${SAMPLERS}.TraceIdRatioBasedSamplerConfig`, {
                  sampling_percentage: {
                    numerator: Math.round(topology.tracing.samplePercent * 10_000),
                    denominator: "MILLION",
                  },
                }),
              },
            }),
          },
        }),
      },
    },
  };
}

/** Where Envoy's image, and Debian, keep the system's trusted CAs. */
export const SYSTEM_CAS = "/etc/ssl/certs/ca-certificates.crt";

/** TLS to an https:// collector: its certificate checked against the system's CAs and its name. */
function collectorTls(host: string) {
  return {
    name: "envoy.transport_sockets.tls",
    typed_config: typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {
      ...(!isIpLiteral(host) && { sni: host }),
      common_tls_context: {
        validation_context: {
          trusted_ca: { filename: SYSTEM_CAS },
          match_typed_subject_alt_names: [
            { san_type: isIpLiteral(host) ? "IP_ADDRESS" : "DNS", matcher: { exact: host } },
          ],
        },
        alpn_protocols: ["h2"],
      },
    }),
  };
}

/** The clusters the stats listener and the tracer need: the admin on loopback, the collector. */
export function observabilityClusters(topology: EnvoyTopology) {
  const clusters: Record<string, unknown>[] = [];
  const plain = (name: string, endpoint: Endpoint, http2: boolean) => ({
    name,
    type: isIpLiteral(endpoint.host) ? "STATIC" : "STRICT_DNS",
    connect_timeout: "1s",
    ...(http2 && {
      typed_extension_protocol_options: {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
          "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
          { explicit_http_config: { http2_protocol_options: {} } },
        ),
      },
    }),
    load_assignment: {
      cluster_name: name,
      endpoints: [
        {
          lb_endpoints: [
            {
              endpoint: {
                address: { socket_address: { address: endpoint.host, port_value: endpoint.port } },
              },
            },
          ],
        },
      ],
    },
  });
  if (topology.stats) {
    // The admin listens on loopback (or wherever topology.admin says); reach it there.
    const host = topology.admin.address === "0.0.0.0" ? "127.0.0.1" : topology.admin.address;
    clusters.push(plain(ADMIN_CLUSTER, { host, port: topology.admin.port }, false));
  }
  if (topology.tracing) {
    const { collector, tls } = topology.tracing;
    clusters.push({
      ...plain(COLLECTOR_CLUSTER, collector, true),
      ...(tls && { transport_socket: collectorTls(collector.host) }),
    });
  }
  return clusters;
}
