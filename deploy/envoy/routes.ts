// The route table: a route per rpc with its retry policy and timeouts, health by service name,
// reflection, CORS preflights, and Envoy's answers for what no route takes.

import { hedgeAfterS, hedged, type MethodInfo, retriable } from "../../kit/contract.js";
import { GRPC_TIMEOUT_PATTERN } from "../../kit/transport/grpc-timeout.js";
import {
  fromOrigin,
  lacking,
  OPTIONS_METHOD,
  REQUESTED_METHOD,
  readableByBrowsers,
} from "./cors.js";
import { lua } from "./lua.js";
import { headerMatches, not, skippedFor, typed } from "./matchers.js";
import { EDGE_PROTOCOL_HEADER } from "./protocols.js";
import { UNROUTED } from "./refusals.js";
import type { GrpcService } from "./topology.js";

/**
 * When Envoy retries an rpc, from its `idempotency_level`. Envoy sees the path, never the body.
 *
 * - NO_SIDE_EFFECTS and IDEMPOTENT: a repeat is harmless, so Envoy also retries after the call
 *   reached a replica (UNAVAILABLE, a reset), as the clients' service config does.
 * - IDEMPOTENCY_UNKNOWN: only when a repeat cannot do anything twice: the call never reached a
 *   replica (connect failure, refused stream, reset before the request went upstream), or the
 *   replica itself answered UNAVAILABLE, which a shopmesh service does only then
 *   (docs/architecture.md). A client retries such calls only transparently: to a client,
 *   UNAVAILABLE may also be a connection lost after the request was sent.
 */
export function retryOn(method: MethodInfo): string {
  return retriable(method)
    ? "unavailable,reset,connect-failure,refused-stream"
    : "unavailable,reset-before-request,connect-failure,refused-stream";
}

/** Every shop service serves these, with the full descriptor set in reflection. */
const INFRA_SERVICES = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];
/** Streaming infra RPCs; they must not be cut by the unary timeout. */
const INFRA_STREAMS = [
  "/grpc.health.v1.Health/Watch",
  "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
  "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
];

/** Seconds the edge lets a unary call run, at most. */
export const UNARY_TIMEOUT_S = 15;
const UNARY_TIMEOUT = `${UNARY_TIMEOUT_S}s`;

/**
 * The deadline a service gets for a unary call that set none: inside the edge's UNARY_TIMEOUT,
 * so the service ends a slow call with its own status before Envoy would cut it.
 */
const DEFAULT_DEADLINE = "14S";

/**
 * A caller's deadline: gRPC's grpc-timeout (a malformed one is refused first), or Connect's
 * connect-timeout-ms, which the Connect bridge turns into a grpc-timeout.
 */
const DEADLINE_HEADERS = [
  { name: "grpc-timeout", present_match: true },
  { name: "connect-timeout-ms", string_match: { safe_regex: { regex: "[0-9]{1,10}" } } },
];

function retryPolicy(method: MethodInfo) {
  return {
    retry_on: retryOn(method),
    num_retries: 3,
    // A read's attempt unanswered this long is hedged (hedge_policy on its route).
    ...(hedged(method) && { per_try_timeout: `${hedgeAfterS(method)}s` }),
    // Try a different replica each time, and retry quickly: a refused or reset call fails fast.
    retry_host_predicate: [
      {
        name: "envoy.retry_host_predicates.previous_hosts",
        typed_config: typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
      },
    ],
    // A rejected pick is made again, up to this many times, and then the last pick is taken,
    // tried or not. Least-request balancing picks, of two replicas, the one with fewer calls in
    // flight three times in four, and a replica that refuses connections or has not connected
    // yet has none: with 5 re-picks a retry went back to it one time in six.
    host_selection_retry_max_attempts: 50,
    retry_back_off: { base_interval: "0.025s", max_interval: "0.25s" },
  };
}

/**
 * Envoy keeps no deadline of an rpc's stream (WatchOrder): the caller's grpc-timeout travels
 * upstream, and the service keeps it, its token's expiry ends it, and the service bounds each
 * caller's streams. Nor does it cut one for idling, even short of heap: once its first message
 * is out, Envoy could only reset it, which grpc-js reads as INTERNAL.
 */
const STREAM_TIMEOUTS = { timeout: "0s", idle_timeout: "0s" };

/**
 * The streams anyone may hold without a token (health Watch, reflection): no deadline, and the
 * listener's idle timeout, which the overload manager shortens to a second short of heap
 * (config.ts).
 */
const OPEN_STREAM_TIMEOUTS = { timeout: "0s" };

interface Route {
  name: string;
  match: { headers?: readonly object[] } & Record<string, unknown>;
  route: Record<string, unknown>;
  request_headers_to_add?: readonly object[];
  decorator?: { operation: string; propagate: boolean };
}

/**
 * A unary call's routes. With a deadline, Envoy keeps no timer on the call: the deadline
 * travels upstream as it came, and the service ends the call when it passes, with its status in
 * the trailers. Envoy's own timer, on its own clock, could fire after the reply had begun, and
 * then only reset the stream, which clients read as INTERNAL (a confirmed CreateOrder among
 * them). Without one, the service gets DEFAULT_DEADLINE, and Envoy cuts the call at
 * UNARY_TIMEOUT only if no replica answers.
 */
function unaryRoutes(route: Route): Route[] {
  return [
    ...DEADLINE_HEADERS.map((deadline) => ({
      ...route,
      name: `${route.name} (${deadline.name})`,
      match: { ...route.match, headers: [...(route.match.headers ?? []), deadline] },
      route: { ...route.route, timeout: "0s" },
    })),
    {
      ...route,
      route: {
        ...route.route,
        timeout: "0s",
        max_stream_duration: { max_stream_duration: UNARY_TIMEOUT },
      },
      request_headers_to_add: [
        ...(route.request_headers_to_add ?? []),
        {
          header: { key: "grpc-timeout", value: DEFAULT_DEADLINE },
          append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
        },
      ],
    },
  ];
}

export function routes(
  services: readonly GrpcService[],
  infraCluster: string,
  corsOrigins: readonly string[],
) {
  const exact: unknown[] = [];
  const prefixes: unknown[] = [];
  const route = (
    name: string,
    match: Route["match"],
    cluster: string,
    action: object = {},
  ): Route => ({
    name,
    match,
    route: { cluster, ...action },
    // Envoy's span of the call is named after the rpc (or the service), as the services' spans
    // are, not "ingress"; the name is not sent upstream.
    decorator: { operation: name, propagate: false },
  });

  for (const service of services) {
    // Routes per rpc, for its retry policy and timeouts. Exact paths come before every prefix,
    // so their order does not matter.
    for (const method of service.methods) {
      const rpc = route(method.path.slice(1), { path: method.path }, service.cluster, {
        retry_policy: retryPolicy(method),
        // The attempt that timed out goes on: it may still answer first.
        ...(hedged(method) && { hedge_policy: { hedge_on_per_try_timeout: true } }),
      });
      if (method.kind === "unary") exact.push(...unaryRoutes(rpc));
      else exact.push({ ...rpc, route: { ...rpc.route, ...STREAM_TIMEOUTS } });
    }
    prefixes.push(
      ...unaryRoutes(route(service.fullName, { prefix: `/${service.fullName}/` }, service.cluster)),
    );
  }

  // Health by service name goes to the cluster serving that service (healthByName); reflection
  // answers the same on every service, with the mesh's public API, so one cluster serves it, and
  // health of "" and of unknown names.
  exact.unshift(...healthRoutes(services));
  for (const grpcPath of INFRA_STREAMS) {
    exact.push(
      edgeReflection(
        route(grpcPath.slice(1), { path: grpcPath }, infraCluster, OPEN_STREAM_TIMEOUTS),
      ),
    );
  }
  for (const name of INFRA_SERVICES) {
    prefixes.push(
      ...unaryRoutes(edgeReflection(route(name, { prefix: `/${name}/` }, infraCluster))),
    );
  }

  // A browser's CORS preflight for a REST path: the transcoder only maps the API's own methods, so
  // OPTIONS /users matches nothing above, and the CORS filter answers only on a forwarding route.
  // The route takes only the allowed origins, which the CORS filter answers, so nothing here
  // reaches the upstream; any other origin's preflight gets the 404 (refusedPreflights), and no
  // CORS headers.
  const preflight = corsOrigins.length
    ? [
        route(
          "cors-preflight",
          {
            prefix: "/",
            headers: [OPTIONS_METHOD, fromOrigin(corsOrigins), REQUESTED_METHOD],
          },
          infraCluster,
        ),
      ]
    : [];
  // Last: everything else, answered by Envoy. gRPC callers get UNIMPLEMENTED, like a server that
  // lacks the method; REST callers get a google.rpc.Status-shaped JSON 404, like a transcoded error.
  const notFound = (name: string, match: Route["match"], body: string, contentType?: string) => ({
    name,
    match,
    direct_response: { status: 404, body: { inline_string: body } },
    ...(contentType
      ? {
          response_headers_to_add: [
            {
              header: { key: "content-type", value: contentType },
              append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
            },
          ],
        }
      : {}),
  });
  // First: every OPTIONS but a preflight from an allowed origin, which the CORS filter answers,
  // gets the 404, whatever its path. A gRPC path's own route would otherwise take it to the
  // service (grpc-js serves OPTIONS as POST), past the token checks a preflight skips.
  const refusedPreflights = [
    notFound(
      "cors-preflight-refused",
      {
        prefix: "/",
        headers: [
          OPTIONS_METHOD,
          ...(corsOrigins.length ? [lacking(fromOrigin(corsOrigins))] : []),
        ],
      },
      "no route for this path",
    ),
    notFound(
      "options-not-preflight",
      { prefix: "/", headers: [OPTIONS_METHOD, lacking(REQUESTED_METHOD)] },
      "no route for this path",
    ),
  ];
  const fallbacks = [
    notFound("grpc-not-found", { prefix: "/", grpc: {} }, UNROUTED.message),
    // A REST caller gets it as google.rpc.Status JSON (restErrorReplies).
    notFound("not-found", { prefix: "/" }, "no route for this path"),
  ].flatMap((fallback) => readableByBrowsers(corsOrigins, fallback));
  // First of all: a grpc-timeout that is not one, which Envoy's router would replace with the
  // route's own timeout, where a service refuses it INVALID_ARGUMENT (EDGE_REFUSALS).
  const malformedTimeout = {
    name: "grpc-timeout-malformed",
    match: {
      prefix: "/",
      headers: [
        { name: "grpc-timeout", present_match: true },
        {
          name: "grpc-timeout",
          string_match: { safe_regex: { regex: GRPC_TIMEOUT_PATTERN } },
          invert_match: true,
        },
      ],
    },
    direct_response: { status: 400, body: { inline_string: "grpc-timeout is not a timeout" } },
  };
  return [
    ...readableByBrowsers(corsOrigins, malformedTimeout),
    ...refusedPreflights,
    ...exact,
    ...prefixes,
    ...preflight,
    ...fallbacks,
  ];
}

/** The header Envoy sets on the reflection calls it forwards (kit/reflection.ts). */
const EDGE_REFLECTION_HEADER = "x-shopmesh-edge";

/** A reflection route marks its calls as the edge's: they list the mesh's public API. */
function edgeReflection(route: Route): Route {
  if (!route.name.startsWith("grpc.reflection.")) return route;
  return {
    ...route,
    request_headers_to_add: [
      ...(route.request_headers_to_add ?? []),
      {
        header: { key: EDGE_REFLECTION_HEADER, value: "public-api" },
        append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
      },
    ],
  };
}

/** The header healthByName sets to route a health call to the cluster serving its service. */
const HEALTH_HEADER = "x-shopmesh-health-cluster";

/**
 * grpc.health.v1 Check and Watch through the edge answer for any public service: a Lua filter
 * (lua/health.lua) reads the service name from the request and routes the call to the cluster
 * serving it. List answers for every public service, each asked of its cluster. The filter also
 * records the gRPC status each call ended with, for the access log.
 */
export function healthByName(services: readonly GrpcService[]) {
  // Skipped for native gRPC, except health calls: gRPC reports its own status to the access log.
  const nativeGrpcNotHealth = {
    and_matcher: {
      predicate: [
        not(headerMatches(EDGE_PROTOCOL_HEADER, { safe_regex: { google_re2: {}, regex: ".*" } })),
        not(headerMatches(":path", { prefix: "/grpc.health.v1.Health/" })),
      ],
    },
  };
  return skippedFor(
    nativeGrpcNotHealth,
    lua(["inflate.lua", "health.lua"], {
      HEALTH_HEADER,
      EDGE_PROTOCOL_HEADER,
      HEALTH_CLUSTERS: Object.fromEntries(
        services.map((service) => [service.fullName, service.cluster]),
      ),
    }),
  );
}

/** The health routes healthByName picks, one per cluster, ahead of the health routes for "". */
function healthRoutes(services: readonly GrpcService[]) {
  const clusters = [...new Set(services.map((service) => service.cluster))];
  return clusters.flatMap((cluster) =>
    ["Check", "Watch"].flatMap((rpc) => {
      const health: Route = {
        name: `grpc.health.v1.Health/${rpc} ${cluster}`,
        match: {
          path: `/grpc.health.v1.Health/${rpc}`,
          headers: [{ name: HEALTH_HEADER, string_match: { exact: cluster } }],
        },
        route: { cluster },
      };
      return rpc === "Watch"
        ? [{ ...health, route: { ...health.route, ...OPEN_STREAM_TIMEOUTS } }]
        : unaryRoutes(health);
    }),
  );
}
