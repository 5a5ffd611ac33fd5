// The Envoy bootstrap for shopmesh's front door, built from a topology, the registry and the
// descriptor set.
//
// Every public service of the registry gets a cluster, and each rpc of its proto services a route
// whose retry policy follows the rpc's `idempotency_level` in the contract: a service or rpc added
// to proto/ and the registry gets its route on the next `npm run deploy:config` (the drift test in
// test/envoy-config.test.ts fails until the committed files are regenerated).
//
// The parts it assembles are the files next to this one (deploy/envoy/README.md lists them).

import { stringify } from "yaml";
import { accessLogs } from "./access-log.js";
import { adminRbac, jwtAuthn } from "./auth.js";
import { cluster, infraCluster, seconds } from "./clusters.js";
import { connectBridge, connectReplies } from "./connect.js";
import { CORS_ALLOW_HEADERS, CORS_EXPOSE_HEADERS } from "./cors.js";
import { typed } from "./matchers.js";
import {
  edgeRequestIds,
  edgeTracing,
  grpcStats,
  grpcStatsTags,
  observabilityClusters,
  queryFreeSpans,
  statsListener,
} from "./observability.js";
import { overloadManager } from "./overload-manager.js";
import { edgeProtocols } from "./protocols.js";
import { addressRateLimit, callerRateLimit } from "./rate-limit.js";
import { edgeGrpcReplies, edgeRefusals } from "./refusals.js";
import { REST_REPLY_BYTES, REST_VALIDATION, restErrorReplies } from "./rest.js";
import { healthByName, routes } from "./routes.js";
import { downstreamTls } from "./tls.js";
import { type EnvoyTopology, type GrpcService, routedServices } from "./topology.js";

/**
 * Gives Envoy's refusals the details the services' refusals have, so that every door reads the
 * same code and ErrorInfo reason whichever side refused: gRPC and gRPC-Web callers a
 * grpc-status-details-bin google.rpc.Status, REST callers (whose requests the transcoder marked
 * with x-envoy-original-path) a google.rpc.Status JSON body, as for a transcoded error.
 */
function localReplies() {
  return {
    // REST before gRPC: the transcoder has made a REST call's content type application/grpc.
    mappers: [...connectReplies(), ...edgeRefusals(), ...restErrorReplies(), ...edgeGrpcReplies()],
  };
}

/**
 * The Envoy bootstrap for a topology, as a plain object (see `envoyYaml` for text). Every proto
 * service in `services` (the public services of the registry by default) gets routes to the
 * cluster of the service that serves it; a cluster without an entry in the topology, or an entry
 * that names no cluster, is an error.
 */
export function envoyConfig(
  topology: EnvoyTopology,
  services: readonly GrpcService[] = routedServices(),
): Record<string, unknown> {
  if (services.length === 0) throw new Error("no public service to route");
  const clusterNames = Object.keys(topology.services);
  for (const name of new Set(services.map((service) => service.cluster))) {
    if (!topology.services[name]) {
      throw new Error(`topology.services has no "${name}" entry for ${describe(services, name)}`);
    }
  }
  for (const name of clusterNames) {
    if (!services.some((service) => service.cluster === name)) {
      throw new Error(`topology.services.${name} is not a public registered service`);
    }
  }
  const intervalMs = topology.healthCheckIntervalMs ?? 1000;

  const httpConnectionManager = typed(
    "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
    {
      stat_prefix: "ingress",
      // HTTP/1.1 for REST and gRPC-Web, HTTP/2 (h2c prior knowledge) for gRPC, on one port.
      codec_type: "AUTO",
      // Edge proxy: the peer address is the client; a client's x-request-id is kept so callers can
      // correlate, and every response carries the id.
      use_remote_address: true,
      preserve_external_request_id: true,
      always_set_request_id_in_response: true,
      ...edgeRequestIds(),
      normalize_path: true,
      merge_slashes: true,
      // A client has 10 s to send a request's headers once it opened the stream, and a minute
      // for the whole request. No rpc streams its request, so a watch's request ends at once;
      // without this bound a stream whose body never comes would be held on both sides for as
      // long as the client likes.
      request_headers_timeout: "10s",
      request_timeout: seconds(topology.requestTimeoutMs ?? 60_000),
      // A call idle for a day is cut (Envoy's default is 5 minutes): a health watch or a
      // reflection stream, since a unary call is bounded by its route and the request timeout
      // first, and WatchOrder's routes have no idle timeout. The overload manager shortens this
      // to a second as the heap nears its budget, and only then is a call cut for idling in
      // practice: refusals.ts answers it EDGE_OVERLOADED.
      stream_idle_timeout: "86400s",
      // HTTP/1.1 passes trailers on, after the last chunk: a native gRPC call sent over it
      // learns its grpc-status instead of a reply that just ends (Envoy drops them by default).
      http_protocol_options: { enable_trailers: true },
      http2_protocol_options: {
        // Detect dead clients holding streams (WatchOrder's routes have no idle timeout).
        connection_keepalive: { interval: "30s", timeout: "10s" },
        // An edge proxy's limits: streams per connection, and how much a client may send
        // before Envoy reads it.
        max_concurrent_streams: 100,
        initial_stream_window_size: 65_536,
        initial_connection_window_size: 1_048_576,
      },
      ...edgeTracing(topology),
      access_log: accessLogs(topology.accessLogPath),
      route_config: {
        name: "shopmesh",
        virtual_hosts: [
          {
            name: "shopmesh",
            domains: ["*"],
            // x-envoy-attempt-count on each attempt: a service logs a retry's or a hedge's.
            include_request_attempt_count: true,
            routes: routes(services, infraCluster(clusterNames, topology), topology.corsOrigins),
            // Browsers may call from the configured origins only (SHOP_CORS_ORIGINS); the token
            // travels in the authorization header, never in cookies.
            ...(topology.corsOrigins.length > 0 && {
              typed_per_filter_config: {
                "envoy.filters.http.cors": typed(
                  "envoy.extensions.filters.http.cors.v3.CorsPolicy",
                  {
                    allow_origin_string_match: topology.corsOrigins.map((origin) => ({
                      exact: origin,
                    })),
                    allow_methods: "GET, POST, PATCH, DELETE, OPTIONS",
                    allow_headers: CORS_ALLOW_HEADERS.join(","),
                    expose_headers: CORS_EXPOSE_HEADERS.join(","),
                    max_age: "600",
                  },
                ),
              },
            }),
          },
        ],
      },
      local_reply_config: localReplies(),
      // Order matters. gRPC-Web first: it turns browser calls into plain gRPC. The transcoder then
      // turns REST calls into gRPC and re-routes them by their gRPC path, so the per-method retry
      // and timeout routes apply to REST too, and so do the token checks. CORS after both: it
      // takes its policy from the route it sees, and before the transcoder a REST path has no
      // forwarding route, so REST responses would get no CORS headers; it answers preflights
      // before any token is asked for. Then each address's rate limit, the token check
      // (jwt_authn), the caller's rate limit, which counts by the token's subject, and the role
      // check (rbac), whose refusals localReplies puts in its caller's protocol. The router last.
      http_filters: [
        edgeProtocols(services, topology.corsOrigins),
        {
          name: "envoy.filters.http.grpc_web",
          typed_config: typed("envoy.extensions.filters.http.grpc_web.v3.GrpcWeb"),
        },
        connectBridge(),
        {
          name: "envoy.filters.http.grpc_json_transcoder",
          typed_config: typed(
            "envoy.extensions.filters.http.grpc_json_transcoder.v3.GrpcJsonTranscoder",
            {
              proto_descriptor: topology.descriptorPath,
              services: services.map((service) => service.fullName),
              print_options: {
                add_whitespace: false,
                // Zero values are data (stock_quantity 0, an empty next_page_token).
                always_print_primitive_fields: true,
                always_print_enums_as_ints: false,
                // user_id, not userId: the same names as the proto and the old REST API.
                preserve_proto_field_names: true,
              },
              // Only the google.api.http paths; gRPC paths are never taken as JSON.
              auto_mapping: false,
              match_incoming_request_route: false,
              // Errors become HTTP statuses with a google.rpc.Status JSON body, details included.
              convert_grpc_status: true,
              request_validation_options: REST_VALIDATION,
              max_response_body_size: REST_REPLY_BYTES,
            },
          ),
        },
        ...queryFreeSpans(topology),
        healthByName(services),
        {
          name: "envoy.filters.http.cors",
          typed_config: typed("envoy.extensions.filters.http.cors.v3.Cors"),
        },
        grpcStats(services),
        ...addressRateLimit(topology),
        jwtAuthn(topology, services),
        ...callerRateLimit(topology),
        ...adminRbac(services),
        {
          name: "envoy.filters.http.router",
          typed_config: typed("envoy.extensions.filters.http.router.v3.Router"),
        },
      ],
    },
  );

  // Each cluster is health-checked on the first proto service of its service.
  const checked = (name: string) =>
    (services.find((service) => service.cluster === name) as GrpcService).fullName;
  return {
    node: { id: "shopmesh-edge", cluster: "shopmesh" },
    ...grpcStatsTags(clusterNames),
    admin: {
      address: {
        socket_address: { address: topology.admin.address, port_value: topology.admin.port },
      },
    },
    static_resources: {
      listeners: [
        {
          name: "ingress",
          address: {
            socket_address: { address: topology.listen.address, port_value: topology.listen.port },
          },
          filter_chains: [
            {
              ...(topology.tls && {
                transport_socket: downstreamTls(topology.tls),
                // A connection that does not finish its TLS handshake in time is closed.
                transport_socket_connect_timeout: "10s",
              }),
              filters: [
                {
                  name: "envoy.filters.network.http_connection_manager",
                  typed_config: httpConnectionManager,
                },
              ],
            },
          ],
        },
        ...statsListener(topology),
      ],
      clusters: [
        ...clusterNames.map((name) =>
          cluster(name, checked(name), topology.services[name] ?? [], intervalMs, topology.tls),
        ),
        ...observabilityClusters(topology),
      ],
    },
    overload_manager: overloadManager(topology.heapMiB),
  };
}

function describe(services: readonly GrpcService[], cluster: string): string {
  return services
    .filter((service) => service.cluster === cluster)
    .map((service) => service.fullName)
    .join(", ");
}

/** `envoyConfig` as YAML text, with a header saying where it came from. */
export function envoyYaml(
  topology: EnvoyTopology,
  services: readonly GrpcService[] = routedServices(),
  header = "",
): string {
  return header + stringify(envoyConfig(topology, services), { lineWidth: 0 });
}
