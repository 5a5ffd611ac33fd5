// The Envoy bootstrap for shopmesh's front door, built from a topology, the registry and the
// descriptor set.
//
// Every public service of the registry gets a cluster, and each rpc of its proto services a route
// whose retry policy follows the rpc's `idempotency_level` in the contract: a service or rpc added
// to proto/ and the registry gets its route on the next `npm run deploy:config` (the drift test in
// test/envoy-config.test.ts fails until the committed files are regenerated).

import { readFileSync } from "node:fs";
import { type DescMessage, getExtension, hasExtension } from "@bufbuild/protobuf";
import { stringify } from "yaml";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import type { AccessRule } from "../../kit/auth.js";
import {
  contractMethods,
  contractRegistry,
  type MethodInfo,
  retriable,
} from "../../kit/contract.js";
import { encodeStatus, ServiceError } from "../../kit/errors.js";
import { GRPC_TIMEOUT_PATTERN } from "../../kit/grpc-timeout.js";
import type { ServiceRegistry } from "../../kit/registry.js";
import { DEV_AUDIENCE, DEV_ISSUER, PRODUCTION_ISSUER } from "../../kit/security.js";
import { accessRules } from "../../kit/service.js";
import { IDENTITY_PREFIX } from "../../kit/tls.js";
import { registry as defaultRegistry } from "../../services/registry.js";
import { ENVOY_HEAP_MIB } from "../settings.js";
import { bindingsOf, type HttpRule, luaPatternOf, variablesOf } from "./http-rules.js";

/** One upstream replica. `host` is an IP literal (STATIC cluster) or a DNS name (STRICT_DNS). */
export interface Endpoint {
  host: string;
  port: number;
}

/** Where Envoy listens and which replicas serve each cluster. */
export interface EnvoyTopology {
  /** The one listener carrying gRPC, gRPC-Web and JSON/REST. */
  listen: { address: string; port: number };
  /** The admin interface; keep it on loopback, it can stop the server. */
  admin: { address: string; port: number };
  /**
   * The descriptor set as Envoy opens it. A relative path is resolved by Envoy against its working
   * directory (not the config file's), so start Envoy from the repo root for the committed config.
   */
  descriptorPath: string;
  /** Replicas per cluster: one cluster per public registered service, named after it. */
  services: Record<string, readonly Endpoint[]>;
  /** JSON access log destination; stdout when absent. */
  accessLogPath?: string;
  /** Active health check interval; 1000 ms when absent. */
  healthCheckIntervalMs?: number;
  /**
   * The edge's mTLS identity (files as Envoy opens them): the listener serves TLS with it, and
   * Envoy presents it to the services, whose certificates it checks against `ca`. Plaintext on
   * both sides without it: the development profile, on loopback only.
   */
  tls?: { cert: string; key: string; ca: string };
  /** How Envoy checks bearer tokens: the JWKS file as Envoy opens it, issuer and audience. */
  jwt: { jwksPath: string; issuer: string; audience: string };
  /** The origins a browser may call from (CORS, exact matches); none when empty. */
  corsOrigins: readonly string[];
  /** A listener serving only Envoy's Prometheus stats (GET /metrics), for scrapers; none when absent. */
  stats?: { address: string; port: number };
  /**
   * Envoy's OpenTelemetry tracer: the edge span of every sampled request, the root of its trace,
   * exported over OTLP/gRPC to `collector`; `samplePercent` of new traces (a request that brings
   * a sampled `traceparent` is always traced). No tracing when absent.
   */
  tracing?: { collector: Endpoint; samplePercent: number };
}

/** One proto service as Envoy routes it, and the cluster that serves it. */
export interface GrpcService {
  /** Fully qualified name, e.g. `shop.user.v1.UserService`. */
  fullName: string;
  /** The registered service that serves it, e.g. `user`. */
  cluster: string;
  /** Its rpcs, as the descriptor set states them. */
  methods: MethodInfo[];
  /** Who may call each rpc, by path: the service module's access rules. */
  access: ReadonlyMap<string, AccessRule>;
}

/**
 * The proto services Envoy routes: the public ones of every registered service. Internal proto
 * services get no route (a call answers UNIMPLEMENTED, as for an unknown method), no REST path
 * and no place in the edge's reflection.
 */
export function routedServices(registry: ServiceRegistry = defaultRegistry): GrpcService[] {
  return registry.services
    .flatMap((service) =>
      service.publicServices.map((fullName) => ({
        fullName,
        cluster: service.name,
        methods: contractMethods(fullName),
        access: accessRules(service.module),
      })),
    )
    .sort((a, b) => a.fullName.localeCompare(b.fullName));
}

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

/** Deadline of a unary call without grpc-timeout, and the cap on a longer grpc-timeout. */
const UNARY_TIMEOUT = "15s";

const typed = (type: string, body: Record<string, unknown> = {}) => ({
  "@type": `type.googleapis.com/${type}`,
  ...body,
});

const seconds = (ms: number) => `${ms / 1000}s`;

/** The dynamic metadata the Lua filters record for the access log (NAMESPACE in lua/). */
const EDGE_METADATA = "shopmesh.edge";

/** The JSON access log fields: one line per request, on stdout or `accessLogPath`. */
export const ACCESS_LOG_FORMAT = {
  start_time: "%START_TIME%",
  // The method the client sent (the transcoder makes every REST call a POST).
  method: "%DYNAMIC_METADATA(shopmesh.edge:method)%",
  // The path the client sent, without its query: the REST path for transcoded calls (the
  // transcoder keeps it in x-envoy-original-path), else the gRPC path.
  path: "%PATH(NQ:ORIG_OR_PATH)%",
  route: "%ROUTE_NAME%",
  protocol: "%PROTOCOL%",
  // What the caller spoke (grpc, grpc-web, connect, rest) and the status it got: the HTTP status,
  // and the gRPC code of the call, which gRPC-Web and Connect carry in their body and REST in its
  // google.rpc.Status body (edgeProtocols and healthByName record it).
  api: "%DYNAMIC_METADATA(shopmesh.edge:protocol)%",
  response_code: "%RESPONSE_CODE%",
  grpc_status: "%DYNAMIC_METADATA(shopmesh.edge:grpc_status)%",
  response_flags: "%RESPONSE_FLAGS%",
  response_code_details: "%RESPONSE_CODE_DETAILS%",
  upstream_cluster: "%UPSTREAM_CLUSTER%",
  upstream_host: "%UPSTREAM_HOST%",
  attempts: "%UPSTREAM_REQUEST_ATTEMPT_COUNT%",
  duration_ms: "%DURATION%",
  upstream_service_time_ms: "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
  bytes_received: "%BYTES_RECEIVED%",
  bytes_sent: "%BYTES_SENT%",
  // Caller-chosen headers, kept to a bound, as the services keep an x-request-id.
  x_request_id: "%REQ(X-REQUEST-ID):128%",
  // The trace this request belongs to (the caller's, or the one the edge started), as the
  // services' log lines name it; null when tracing is off.
  trace_id: "%TRACE_ID%",
  user_agent: "%REQ(USER-AGENT):256%",
  downstream_remote_address: "%DOWNSTREAM_REMOTE_ADDRESS%",
};

/**
 * Native gRPC's fields of the access log. No Lua filter runs for native gRPC (edgeProtocols,
 * healthByName), so these come from the request and the gRPC status Envoy itself reads.
 */
const NATIVE_GRPC_LOG_FORMAT = {
  ...ACCESS_LOG_FORMAT,
  method: "%REQ(:METHOD)%",
  api: "grpc",
  grpc_status: "%GRPC_STATUS_NUMBER%",
};

/**
 * An access log filter, which local reply mappers take too: a CEL expression over the request,
 * Envoy's response and the stream's metadata.
 */
const when = (expression: string) => ({
  extension_filter: {
    name: "envoy.access_loggers.extension_filters.cel",
    typed_config: typed("envoy.extensions.access_loggers.filters.cel.v3.ExpressionFilter", {
      expression,
    }),
  },
});

// Which of the two access logs writes a request's line. A native gRPC call is one for which
// edgeProtocols recorded no protocol (it records one for every other protocol) and whose content
// type is gRPC. Built-in filters, not CEL: they run for every request.

/** edgeProtocols recorded a protocol; `absent` matches when it recorded none. */
const protocolRecorded = (absent: boolean) => ({
  metadata_filter: {
    matcher: {
      filter: EDGE_METADATA,
      path: [{ key: "protocol" }],
      // A recorded protocol is a string: present_match takes it, null_match never does.
      value: absent ? { null_match: {} } : { present_match: true },
    },
    match_if_key_not_found: absent,
  },
});

/** The content type is gRPC's; `invert` matches every other one, and none. */
const grpcContentType = (invert: boolean) => ({
  header_filter: {
    header: {
      name: "content-type",
      string_match: { prefix: "application/grpc" },
      invert_match: invert,
      treat_missing_header_as_empty: true,
    },
  },
});

const NATIVE_GRPC_LINE = {
  and_filter: { filters: [protocolRecorded(true), grpcContentType(false)] },
};
const OTHER_LINE = { or_filter: { filters: [protocolRecorded(false), grpcContentType(true)] } };

/** The JSON access log: one line per request, on stdout or `accessLogPath`. */
function accessLogs(accessLogPath: string | undefined) {
  const logger = (format: Record<string, string>, native: boolean) => {
    const log_format = { json_format: format };
    return {
      filter: native ? NATIVE_GRPC_LINE : OTHER_LINE,
      ...(accessLogPath === undefined
        ? {
            name: "envoy.access_loggers.stdout",
            typed_config: typed("envoy.extensions.access_loggers.stream.v3.StdoutAccessLog", {
              log_format,
            }),
          }
        : {
            name: "envoy.access_loggers.file",
            typed_config: typed("envoy.extensions.access_loggers.file.v3.FileAccessLog", {
              path: accessLogPath,
              log_format,
            }),
          }),
    };
  };
  return [logger(NATIVE_GRPC_LOG_FORMAT, true), logger(ACCESS_LOG_FORMAT, false)];
}

function retryPolicy(method: MethodInfo) {
  return {
    retry_on: retryOn(method),
    num_retries: 3,
    // Try a different replica each time, and retry quickly: a refused or reset call fails fast.
    retry_host_predicate: [
      {
        name: "envoy.retry_host_predicates.previous_hosts",
        typed_config: typed("envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"),
      },
    ],
    host_selection_retry_max_attempts: 5,
    retry_back_off: { base_interval: "0.025s", max_interval: "0.25s" },
  };
}

/**
 * Unary calls honour the caller's grpc-timeout up to UNARY_TIMEOUT, and get UNARY_TIMEOUT without
 * one. Envoy ignores the route `timeout` for gRPC once grpc_timeout_header_max is set (a call
 * without grpc-timeout would then run forever), so the default is max_stream_duration, which a
 * grpc-timeout header replaces. Streams are never cut by Envoy: no route, idle or stream timeout,
 * and the caller's grpc-timeout, if any, is honoured uncapped.
 */
function timeouts(streaming: boolean) {
  return streaming
    ? // Envoy does not time streams: the caller's grpc-timeout travels upstream and the service
      // ends the stream with DEADLINE_EXCEEDED. (Envoy's own timer reset streams as INTERNAL.)
      { timeout: "0s", idle_timeout: "0s" }
    : {
        timeout: UNARY_TIMEOUT,
        max_stream_duration: {
          max_stream_duration: UNARY_TIMEOUT,
          grpc_timeout_header_max: UNARY_TIMEOUT,
        },
      };
}

function routes(
  services: readonly GrpcService[],
  infraCluster: string,
  corsOrigins: readonly string[],
) {
  const exact: unknown[] = [];
  const prefixes: unknown[] = [];
  const route = (name: string, match: object, cluster: string, action: object = {}) => ({
    name,
    match,
    route: { cluster, ...action },
  });

  for (const service of services) {
    // A route per rpc, for its retry policy (and a stream's timeouts). Exact paths come before
    // every prefix, so their order does not matter.
    for (const method of service.methods) {
      const streaming = method.kind !== "unary";
      exact.push(
        route(method.path.slice(1), { path: method.path }, service.cluster, {
          ...timeouts(streaming),
          retry_policy: retryPolicy(method),
        }),
      );
    }
    prefixes.push(
      route(
        service.fullName,
        { prefix: `/${service.fullName}/` },
        service.cluster,
        timeouts(false),
      ),
    );
  }

  // Health by service name goes to the cluster serving that service (healthByName); reflection
  // answers the same on every service, with the mesh's public API, so one cluster serves it, and
  // health of "" and of unknown names.
  exact.unshift(...healthRoutes(services));
  for (const grpcPath of INFRA_STREAMS) {
    exact.push(
      edgeReflection(route(grpcPath.slice(1), { path: grpcPath }, infraCluster, timeouts(true))),
    );
  }
  for (const name of INFRA_SERVICES) {
    prefixes.push(
      edgeReflection(route(name, { prefix: `/${name}/` }, infraCluster, timeouts(false))),
    );
  }

  // A browser's CORS preflight for a REST path: the transcoder only maps the API's own methods, so
  // OPTIONS /users matches nothing above, and the CORS filter answers only on a forwarding route.
  // The route takes only the allowed origins, which the CORS filter answers, so nothing here
  // reaches the upstream; any other origin's preflight gets the 404 (refusedPreflight), and no
  // CORS headers.
  const preflight = corsOrigins.length
    ? [
        route(
          "cors-preflight",
          {
            prefix: "/",
            headers: [
              { name: ":method", string_match: { exact: "OPTIONS" } },
              {
                name: "origin",
                string_match: { safe_regex: { regex: originPattern(corsOrigins) } },
              },
              { name: "access-control-request-method", present_match: true },
            ],
          },
          infraCluster,
        ),
      ]
    : [];
  // Last: everything else, answered by Envoy. gRPC callers get UNIMPLEMENTED, like a server that
  // lacks the method; REST callers get a google.rpc.Status-shaped JSON 404, like a transcoded error.
  const notFound = (name: string, match: object, body: string, contentType?: string) => ({
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
  // First: a preflight from any origin but the allowed ones gets the 404, whatever its path; a
  // gRPC path's own route would otherwise take it to the service.
  const refusedPreflight = notFound(
    "cors-preflight-refused",
    {
      prefix: "/",
      headers: [
        { name: ":method", string_match: { exact: "OPTIONS" } },
        { name: "access-control-request-method", present_match: true },
        ...(corsOrigins.length
          ? [
              {
                name: "origin",
                string_match: { safe_regex: { regex: originPattern(corsOrigins) } },
                invert_match: true,
              },
            ]
          : []),
      ],
    },
    "no route for this path",
  );
  const fallbacks = [
    notFound("grpc-not-found", { prefix: "/", grpc: {} }, UNROUTED.message),
    // A REST caller gets it as google.rpc.Status JSON (restErrorReplies).
    notFound("not-found", { prefix: "/" }, "no route for this path"),
  ];
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
  return [malformedTimeout, refusedPreflight, ...exact, ...prefixes, ...preflight, ...fallbacks];
}

// Headers a gRPC-Web, Connect or REST client in a browser sends and reads.
const CORS_ALLOW_HEADERS = [
  "authorization",
  "cache-control",
  "connect-protocol-version",
  "connect-timeout-ms",
  "content-transfer-encoding",
  "content-type",
  "grpc-timeout",
  "keep-alive",
  "user-agent",
  "x-accept-content-transfer-encoding",
  "x-accept-response-streaming",
  "x-grpc-web",
  "x-request-id",
  "x-user-agent",
];
const CORS_EXPOSE_HEADERS = [
  "grpc-message",
  "grpc-status",
  "grpc-status-details-bin",
  "x-request-id",
];

/** The header Envoy sets on the reflection calls it forwards (kit/reflection.ts). */
const EDGE_REFLECTION_HEADER = "x-shopmesh-edge";

/** A reflection route marks its calls as the edge's: they list the mesh's public API. */
function edgeReflection<R extends { name: string }>(route: R): R {
  if (!route.name.startsWith("grpc.reflection.")) return route;
  return {
    ...route,
    request_headers_to_add: [
      {
        header: { key: EDGE_REFLECTION_HEADER, value: "public-api" },
        append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
      },
    ],
  };
}

// ---------------------------------------------------------------------------------------------
// Health by service name, the caller's protocol and status, Connect, REST errors

/** The header healthByName sets to route a health call to the cluster serving its service. */
const HEALTH_HEADER = "x-shopmesh-health-cluster";

/**
 * Set by edgeProtocols on every request that is not native gRPC, to the caller's protocol, and
 * removed by healthByName: it tells healthByName, behind the bridges that made every request
 * gRPC, which requests came in as something else.
 */
const EDGE_PROTOCOL_HEADER = "x-shopmesh-edge-protocol";

const headerInput = (name: string) => ({
  name: `request header ${name}`,
  typed_config: typed("envoy.type.matcher.v3.HttpRequestHeaderMatchInput", { header_name: name }),
});

const headerMatches = (name: string, value_match: Record<string, unknown>) => ({
  single_predicate: { input: headerInput(name), value_match },
});

const not = (predicate: object) => ({ not_matcher: predicate });

/** A native gRPC request, by its content type (application/grpc, application/grpc+proto). */
const NATIVE_GRPC = {
  and_matcher: {
    predicate: [
      headerMatches("content-type", { prefix: "application/grpc" }),
      not(headerMatches("content-type", { prefix: "application/grpc-web" })),
    ],
  },
};

/**
 * `filter`, which Envoy skips for the requests `predicate` matches. It sees the request as the
 * filters before it left it.
 */
function skippedFor(predicate: object, filter: { name: string; typed_config: object }) {
  return {
    name: filter.name,
    typed_config: typed("envoy.extensions.common.matching.v3.ExtensionWithMatcher", {
      extension_config: filter,
      xds_matcher: {
        matcher_list: {
          matchers: [
            {
              predicate,
              on_match: {
                action: {
                  name: "skip",
                  typed_config: typed(
                    "envoy.extensions.filters.common.matcher.action.v3.SkipFilter",
                  ),
                },
              },
            },
          ],
        },
      },
    }),
  };
}

/** A Lua filter: `definitions`, then the files of lua/ (a library first, then the filter). */
const lua = (files: string | string[], definitions: Record<string, unknown>) => ({
  name: "envoy.filters.http.lua",
  typed_config: typed("envoy.extensions.filters.http.lua.v3.Lua", {
    default_source_code: {
      inline_string: [
        ...Object.entries(definitions).map(([name, value]) => `${name} = ${luaValue(value)}`),
        ...[files]
          .flat()
          .map((file) => readFileSync(new URL(`./lua/${file}`, import.meta.url), "utf8")),
      ].join("\n"),
    },
  }),
});

/** A Lua literal for JSON-like data. */
function luaValue(value: unknown): string {
  if (Array.isArray(value)) return `{ ${value.map(luaValue).join(", ")} }`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value).sort(([a], [b]) => a.localeCompare(b));
    return `{ ${entries.map(([key, inner]) => `[${JSON.stringify(key)}] = ${luaValue(inner)}`).join(", ")} }`;
  }
  return JSON.stringify(value);
}

/**
 * grpc.health.v1 Check and Watch through the edge answer for any public service: a Lua filter
 * (lua/health.lua) reads the service name from the request and routes the call to the cluster
 * serving it. List answers for every public service, each asked of its cluster. The filter also
 * records the gRPC status each call ended with, for the access log.
 */
function healthByName(services: readonly GrpcService[]) {
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
    ["Check", "Watch"].map((rpc) => ({
      name: `grpc.health.v1.Health/${rpc} ${cluster}`,
      match: {
        path: `/grpc.health.v1.Health/${rpc}`,
        headers: [{ name: HEALTH_HEADER, string_match: { exact: cluster } }],
      },
      route: { cluster, ...timeouts(rpc === "Watch") },
    })),
  );
}

/**
 * The Connect protocol (unary and streaming, POST and GET) at the edge: Envoy's bridge turns it
 * into gRPC before every other filter, and the reply back into Connect.
 */
function connectBridge() {
  return {
    name: "envoy.filters.http.connect_grpc_bridge",
    typed_config: typed("envoy.extensions.filters.http.connect_grpc_bridge.v3.FilterConfig"),
  };
}

/**
 * The caller's protocol and status, and REST requests checked against the contract: the first
 * filter (lua/edge.lua). It refuses a REST body with a field its message lacks, and a query
 * parameter for a field the path or the body sets (INVALID_ARGUMENT), and strips grpc-* headers
 * from REST and Connect replies.
 */
function edgeProtocols(services: readonly GrpcService[]) {
  const registry = contractRegistry();
  const http = registry.getExtension("google.api.http");
  if (!http) throw new Error("google.api.http is not in the descriptor set");
  const bodies: { method: string; pattern: string; message: string }[] = [];
  const queries: { method: string; pattern: string; taken: string[]; body: string }[] = [];
  const messages: Record<string, Record<string, string | false>> = {};
  const describe = (message: DescMessage) => {
    if (messages[message.typeName] || message.file.proto.package.startsWith("google.")) return;
    const fields: Record<string, string | false> = {};
    messages[message.typeName] = fields;
    for (const field of message.fields) {
      const inner =
        field.fieldKind === "message" || field.fieldKind === "list" ? field.message : undefined;
      fields[field.name] = inner ? inner.typeName : false;
      fields[field.jsonName] = fields[field.name] as string | false;
      if (inner) describe(inner);
    }
  };
  for (const service of services) {
    for (const method of registry.getService(service.fullName)?.methods ?? []) {
      const options = method.proto.options;
      if (!options || !hasExtension(options, http)) continue;
      for (const { verb, template, body } of bindingsOf(getExtension(options, http) as HttpRule)) {
        const pattern = luaPatternOf(template);
        // Fields the path or the body sets, by each name a query parameter may give them.
        const taken = [...variablesOf(template), ...(body && body !== "*" ? [body] : [])];
        queries.push({
          method: verb,
          pattern,
          taken: [
            ...new Set(
              taken.flatMap((name) => [
                name,
                name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
              ]),
            ),
          ],
          body,
        });
        if (!body) continue;
        const message =
          body === "*"
            ? method.input
            : method.input.fields.find((field) => field.name === body)?.message;
        if (!message) continue;
        describe(message);
        bodies.push({ method: verb, pattern, message: message.typeName });
      }
    }
  }
  // Native gRPC needs none of it: the access log reads its protocol and status from Envoy.
  return skippedFor(
    NATIVE_GRPC,
    lua("edge.lua", {
      REST_BODIES: bodies,
      REST_QUERIES: queries,
      MESSAGES: messages,
      CONNECT_GET: connectGetPaths(services),
      CONNECT_GET_REFUSAL: connectGetRefusal(),
      EDGE_PROTOCOL_HEADER,
    }),
  );
}

/**
 * The rpcs a Connect client may send as an HTTP GET: unary and NO_SIDE_EFFECTS, as the Connect
 * protocol says. lua/edge.lua refuses a GET for any other path with 405.
 */
function connectGetPaths(services: readonly GrpcService[]): Record<string, true> {
  const paths: Record<string, true> = {};
  for (const service of services) {
    for (const method of service.methods) {
      if (method.kind === "unary" && method.idempotency === "NO_SIDE_EFFECTS") {
        paths[method.path] = true;
      }
    }
  }
  return paths;
}

/** The Connect error a refused GET gets: UNIMPLEMENTED, METHOD_NOT_ALLOWED. */
function connectGetRefusal(): string {
  const info = ErrorInfo.encode({
    reason: "METHOD_NOT_ALLOWED",
    domain: EDGE_DOMAIN,
    metadata: {},
  }).finish();
  return JSON.stringify({
    code: "unimplemented",
    message: "only an rpc without side effects may be sent as a GET; send it as a POST",
    details: [
      {
        type: "google.rpc.ErrorInfo",
        value: Buffer.from(info).toString("base64").replace(/=+$/, ""),
      },
    ],
  });
}

/**
 * The transcoder refuses an unknown query parameter (as an unknown body field is refused) and a
 * field bound both in the path and the body, with INVALID_ARGUMENT.
 */
const REST_VALIDATION = {
  reject_unknown_query_parameters: true,
  reject_binding_body_field_collisions: true,
};

/**
 * HTTP statuses of Envoy's own REST replies, with the gRPC code and ErrorInfo reason each stands
 * for. A 400 is a body or query the transcoder could not read into the rpc's request message.
 */
const REST_LOCAL_REPLIES: Record<number, [code: number, reason: string]> = {
  400: [3, "MALFORMED_REQUEST"],
  401: [16, "UNAUTHENTICATED"],
  403: [7, "PERMISSION_DENIED"],
  404: [5, "ROUTE_NOT_FOUND"],
  408: [4, "DEADLINE_EXCEEDED"],
  413: [8, "REQUEST_TOO_LARGE"],
  429: [8, "RESOURCE_EXHAUSTED"],
  500: [13, "INTERNAL"],
  501: [12, "UNIMPLEMENTED"],
  502: [14, "UNAVAILABLE"],
  503: [14, "UNAVAILABLE"],
  504: [4, "DEADLINE_EXCEEDED"],
};

/**
 * Envoy's own replies to REST calls (a body or query the transcoder cannot read, no route, no
 * healthy replica, a timeout) as a google.rpc.Status JSON body with the code its HTTP status
 * stands for and an ErrorInfo, as the transcoder's upstream errors are. A REST call is one
 * edgeProtocols marked so.
 */
function restErrorReplies() {
  const rest = "metadata.filter_metadata['shopmesh.edge']['protocol'] == 'rest'";
  // A request Envoy refused before edgeProtocols saw it (a path it will not normalize, say) is
  // answered as REST too, unless it is gRPC or gRPC-Web.
  const unseen =
    "!('shopmesh.edge' in metadata.filter_metadata) && !('content-type' in request.headers && " +
    "request.headers['content-type'].startsWith('application/grpc'))";
  return Object.entries(REST_LOCAL_REPLIES).flatMap(([status, [code, reason]]) => {
    const body_format_override = {
      json_format: {
        code,
        message: "%LOCAL_REPLY_BODY%",
        details: [{ "@type": ERROR_INFO, reason, domain: EDGE_DOMAIN, metadata: {} }],
      },
      content_type: "application/json",
    };
    return [
      {
        // edgeProtocols' own refusals (lua_response) are google.rpc.Status JSON already.
        filter: when(
          `${rest} && response.code == ${status} && response.code_details != 'lua_response'`,
        ),
        headers_to_add: [
          // For the access log only: edgeProtocols records it and strips it from the reply.
          {
            header: { key: "grpc-status", value: String(code) },
            append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
          },
        ],
        body_format_override,
      },
      { filter: when(`${unseen} && response.code == ${status}`), body_format_override },
    ];
  });
}

/** `^(a|b)$` for exact origins, each escaped. */
function originPattern(origins: readonly string[]): string {
  return `^(${origins.map((origin) => origin.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})$`;
}

const TLS_SOCKET = "envoy.transport_sockets.tls";

/** The certificate a TLS context presents: the edge identity's. */
const edgeCertificate = (tls: NonNullable<EnvoyTopology["tls"]>) => [
  { certificate_chain: { filename: tls.cert }, private_key: { filename: tls.key } },
];

/** The listener's TLS: the edge's certificate; clients need no certificate of their own. */
function downstreamTls(tls: NonNullable<EnvoyTopology["tls"]>) {
  return {
    name: TLS_SOCKET,
    typed_config: typed("envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext", {
      common_tls_context: {
        tls_certificates: edgeCertificate(tls),
        // gRPC needs h2; REST and gRPC-Web may come over HTTP/1.1.
        alpn_protocols: ["h2", "http/1.1"],
      },
    }),
  };
}

/**
 * Mutual TLS to a service: Envoy presents the edge identity and accepts only a certificate of
 * the mesh's CA that names the service (`spiffe://shopmesh/<service>`).
 */
function upstreamTls(tls: NonNullable<EnvoyTopology["tls"]>, service: string) {
  return {
    name: TLS_SOCKET,
    typed_config: typed("envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext", {
      sni: service,
      common_tls_context: {
        tls_certificates: edgeCertificate(tls),
        validation_context: {
          trusted_ca: { filename: tls.ca },
          match_typed_subject_alt_names: [
            { san_type: "URI", matcher: { exact: `${IDENTITY_PREFIX}${service}` } },
          ],
        },
        alpn_protocols: ["h2"],
      },
    }),
  };
}

/** The ErrorInfo domain of the refusals Envoy sends itself. */
export const EDGE_DOMAIN = "shopmesh.edge";

const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";

/**
 * Envoy's own refusals, by the response code details its filters set, with the code, reason and
 * message a service would send for the same refusal: the first match wins.
 */
export const EDGE_REFUSALS = [
  {
    details: "jwt_authn_access_denied{Jwt_is_missing}",
    status: 401,
    code: 16,
    reason: "TOKEN_MISSING",
    message: "this call needs a bearer token",
  },
  {
    details: "jwt_authn_access_denied{Jwt_is_expired}",
    status: 401,
    code: 16,
    reason: "TOKEN_EXPIRED",
    message: "the token has expired",
  },
  {
    // A wrong audience is a 403 to jwt_authn; to the services it is an invalid token, as here.
    details: "jwt_authn_access_denied",
    status: 401,
    code: 16,
    reason: "TOKEN_INVALID",
    message: "the token is not valid here",
  },
  {
    details: "rbac_access_denied",
    status: 403,
    code: 7,
    reason: "ADMIN_REQUIRED",
    message: "this call needs role admin",
  },
  {
    // The route for a grpc-timeout that is not one (routes): Envoy's router would put its own
    // timeout in its place, where a service refuses it. Matched by the route's status, since
    // every direct response has the same details.
    details: "direct_response",
    when: "response.code_details == 'direct_response' && response.code == 400",
    status: 400,
    code: 3,
    reason: "MALFORMED_REQUEST",
    message: "grpc-timeout is not a timeout (up to 8 digits and a unit: H, M, S, m, u or n)",
  },
  {
    details: "grpc_base_64_decode_failed",
    status: 400,
    code: 3,
    reason: "MALFORMED_REQUEST",
    message: "the gRPC-Web text body is not base64",
  },
  {
    // A unary call's grpc-timeout (or 15 s) ran out before its reply came.
    details: "max_duration_timeout",
    status: 504,
    code: 4,
    reason: "DEADLINE_EXCEEDED",
    message: "the deadline passed at the edge",
  },
] as const;

/**
 * Gives Envoy's refusals the details the services' refusals have, so that every door reads the
 * same code and ErrorInfo reason whichever side refused: gRPC and gRPC-Web callers a
 * grpc-status-details-bin google.rpc.Status, REST callers (whose requests the transcoder marked
 * with x-envoy-original-path) a google.rpc.Status JSON body, as for a transcoded error.
 */
function localReplies() {
  return {
    mappers: [...connectReplies(), ...edgeRefusals(), unroutedGrpc(), ...restErrorReplies()],
  };
}

/** CEL: the local reply is this refusal of Envoy's, by the response code details it set. */
const refusedBy = (refusal: (typeof EDGE_REFUSALS)[number]) =>
  "when" in refusal
    ? refusal.when
    : `response.code_details.startsWith('${refusal.details.replace(/}$/, "")}')`;

/** Envoy's answer for a path with no route (grpc-not-found), as a service lacking the method. */
const UNROUTED = {
  when: "response.code_details == 'direct_response' && response.code == 404",
  code: 12,
  reason: "UNKNOWN_METHOD",
  message: "unknown service or method",
} as const;

/** The gRPC codes gRPC-Web clients read from the HTTP statuses of Envoy's refusals. */
const GRPC_CODE_OF_HTTP: Record<number, number> = { 401: 16, 403: 7, 504: 14 };

/** CEL: edgeProtocols marked the call gRPC-Web (the gRPC-Web filter rewrote its content type). */
const GRPC_WEB = "metadata.filter_metadata['shopmesh.edge']['protocol'] == 'grpc-web'";

function edgeRefusals() {
  return EDGE_REFUSALS.flatMap((refusal) => {
    const refused = refusedBy(refusal);
    const status = {
      code: refusal.code,
      message: refusal.message,
      details: [
        {
          "@type": ERROR_INFO,
          reason: refusal.reason,
          domain: EDGE_DOMAIN,
          metadata: {},
        },
      ],
    };
    const grpcReply = {
      headers_to_add: [
        {
          header: { key: "grpc-status", value: String(refusal.code) },
          append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
        },
        {
          header: {
            key: "grpc-status-details-bin",
            value: encodeStatus(
              new ServiceError(refusal.code, refusal.message, { reason: refusal.reason }),
              EDGE_DOMAIN,
            ).toString("base64"),
          },
          append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
        },
      ],
      body: { inline_string: refusal.message },
    };
    return [
      {
        filter: when(`${refused} && 'x-envoy-original-path' in request.headers`),
        status_code: refusal.status,
        // For the access log only: edgeProtocols records it and strips it from the reply.
        headers_to_add: [
          {
            header: { key: "grpc-status", value: String(refusal.code) },
            append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
          },
        ],
        body_format_override: {
          text_format_source: { inline_string: JSON.stringify(status) },
          content_type: "application/json",
        },
      },
      // A gRPC-Web client reads its code from an HTTP status other than 200 (UNAVAILABLE for a
      // 504): it gets a 200 unless the status says the refusal's code.
      ...(GRPC_CODE_OF_HTTP[refusal.status] === refusal.code
        ? []
        : [
            {
              // A trailers-only reply: a body would make the gRPC-Web filter answer UNKNOWN.
              headers_to_add: [
                ...grpcReply.headers_to_add,
                {
                  header: { key: "grpc-message", value: refusal.message },
                  append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
                },
              ],
              filter: when(`${refused} && ${GRPC_WEB}`),
              status_code: 200,
              body: { inline_string: "" },
            },
          ]),
      { ...grpcReply, filter: when(refused), status_code: refusal.status },
    ];
  });
}

/**
 * A gRPC or gRPC-Web call on a path with no route (grpc-not-found) answers UNIMPLEMENTED with the
 * ErrorInfo a service sends for a method it lacks.
 */
function unroutedGrpc() {
  const grpc =
    "'content-type' in request.headers && request.headers['content-type'].startsWith('application/grpc')";
  return {
    filter: when(`${UNROUTED.when} && ${grpc}`),
    headers_to_add: [
      {
        header: {
          key: "grpc-status-details-bin",
          value: encodeStatus(
            new ServiceError(UNROUTED.code, UNROUTED.message, { reason: UNROUTED.reason }),
            EDGE_DOMAIN,
          ).toString("base64"),
        },
        append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
      },
    ],
  };
}

/** Connect's names of the codes Envoy's own replies carry. */
const CONNECT_CODES: Record<number, string> = {
  3: "invalid_argument",
  4: "deadline_exceeded",
  7: "permission_denied",
  8: "resource_exhausted",
  12: "unimplemented",
  16: "unauthenticated",
};

/**
 * A Connect unary body past the stream's buffer (64 KiB over HTTP/2, the stream window), which
 * the bridge must hold whole: as REST's 413, RESOURCE_EXHAUSTED. Envoy sends it as bare text,
 * which Connect clients read as UNKNOWN.
 */
const CONNECT_TOO_LARGE = {
  when: "response.code_details == 'connect_bridge_unary_request_too_large'",
  code: 8,
  reason: "REQUEST_TOO_LARGE",
  message: "the request is larger than the edge buffers for a Connect call",
} as const;

/**
 * Envoy's refusals and no-route reply to a Connect call (edgeProtocols marked it), as a Connect
 * error with its ErrorInfo: for a unary call the error JSON under the refusal's HTTP status, for
 * a streaming one a 200 whose body is the end-of-stream message. Envoy would send the bare text.
 */
function connectReplies() {
  const connect = "metadata.filter_metadata['shopmesh.edge']['protocol'] == 'connect'";
  const stream = "metadata.filter_metadata['shopmesh.edge']['stream'] == true";
  const replies = [
    ...EDGE_REFUSALS.map((refusal) => ({ when: refusedBy(refusal), ...refusal })),
    UNROUTED,
    CONNECT_TOO_LARGE,
  ];
  return replies.flatMap((reply) => {
    const error = JSON.stringify({
      code: CONNECT_CODES[reply.code],
      message: reply.message,
      details: [
        {
          type: "google.rpc.ErrorInfo",
          value: Buffer.from(
            ErrorInfo.encode({ reason: reply.reason, domain: EDGE_DOMAIN, metadata: {} }).finish(),
          )
            .toString("base64")
            .replace(/=+$/, ""),
        },
      ],
    });
    // For lua/edge.lua, which records it for the access log and strips it from the reply.
    const code = [
      {
        header: { key: "grpc-status", value: String(reply.code) },
        append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
      },
    ];
    return [
      {
        filter: when(`${connect} && ${stream} && ${reply.when}`),
        status_code: 200,
        headers_to_add: code,
        body_format_override: {
          text_format_source: {
            inline_bytes: endOfStream(`{"error":${error}}`).toString("base64"),
          },
          content_type: "application/connect+proto",
        },
      },
      {
        filter: when(`${connect} && ${reply.when}`),
        headers_to_add: code,
        body_format_override: {
          text_format_source: { inline_string: error },
          content_type: "application/json",
        },
      },
    ];
  });
}

/** A Connect end-of-stream message: flags 0x02, the length, then the JSON. */
function endOfStream(json: string): Buffer {
  const body = Buffer.from(json);
  const head = Buffer.alloc(5);
  head[0] = 0x02;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

const JWT_PROVIDER = "shopmesh";

/**
 * Envoy checks the bearer token of every routed rpc the way the services will again: required,
 * except for open rpcs, where a token is optional but must be valid when sent. Health, reflection
 * and unrouted paths need none. Rules match the gRPC path, after the transcoder rewrote a REST
 * path to it.
 */
function jwtAuthn(topology: EnvoyTopology, services: readonly GrpcService[]) {
  const rules = services.flatMap((service) =>
    service.methods.map((method) => {
      const rule = service.access.get(method.path);
      if (!rule || rule.kind === "internal") {
        throw new Error(`${method.path} is routed at the edge but has no public access rule`);
      }
      return {
        match: { path: method.path },
        requires:
          rule.kind === "open"
            ? {
                requires_any: {
                  requirements: [{ provider_name: JWT_PROVIDER }, { allow_missing: {} }],
                },
              }
            : { provider_name: JWT_PROVIDER },
      };
    }),
  );
  return {
    name: "envoy.filters.http.jwt_authn",
    typed_config: typed("envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication", {
      providers: {
        [JWT_PROVIDER]: {
          issuer: topology.jwt.issuer,
          audiences: [topology.jwt.audience],
          local_jwks: { filename: topology.jwt.jwksPath },
          // Where the services read a token, and only there: not the access_token query
          // parameter jwt_authn also reads by default, which ends up in access logs.
          from_headers: ["Bearer ", "bearer "].map((value_prefix) => ({
            name: "authorization",
            value_prefix,
          })),
          // What the services require of a token: an expiry and a subject.
          require_expiration: true,
          subjects: { safe_regex: { regex: ".+" } },
          // The services verify the token again themselves.
          forward: true,
          payload_in_metadata: "jwt_payload",
          clock_skew_seconds: 30,
          // A token seen again skips its signature check until it expires (off unless set). A
          // cached token has 60 s of skew, not 30; the services still refuse it 30 s past expiry.
          jwt_cache_config: { jwt_cache_size: 1000 },
        },
      },
      rules,
    }),
  };
}

/** Admin-only rpcs need role admin in the verified token; the services check it again. */
function adminRbac(services: readonly GrpcService[]) {
  const paths = services.flatMap((service) =>
    service.methods.filter((method) => service.access.get(method.path)?.kind === "admin"),
  );
  if (paths.length === 0) return [];
  return [
    {
      name: "envoy.filters.http.rbac",
      typed_config: typed("envoy.extensions.filters.http.rbac.v3.RBAC", {
        rules: {
          action: "DENY",
          policies: {
            "admin-required": {
              permissions: [
                {
                  or_rules: {
                    rules: paths.map((method) => ({ url_path: { path: { exact: method.path } } })),
                  },
                },
              ],
              principals: [
                {
                  not_id: {
                    sourced_metadata: {
                      metadata_matcher: {
                        filter: "envoy.filters.http.jwt_authn",
                        path: [{ key: "jwt_payload" }, { key: "roles" }],
                        value: { list_match: { one_of: { string_match: { exact: "admin" } } } },
                      },
                    },
                  },
                },
              ],
            },
          },
        },
      }),
    },
  ];
}

function cluster(
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
    typed_extension_protocol_options: {
      "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": typed(
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
        {
          explicit_http_config: {
            http2_protocol_options: { connection_keepalive: { interval: "30s", timeout: "5s" } },
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
          // amplify an overload; at least 10 at a time, so that a replica killed under light
          // load is covered: a retry holds its slot through its backoff, and with a floor of 3 a
          // burst of calls to the dead replica overflowed it and failed calls (CI, once).
          retry_budget: { budget_percent: { value: 20 }, min_retry_concurrency: 10 },
          track_remaining: true,
        },
      ],
    },
  };
}

function isIpLiteral(host: string): boolean {
  return /^\d{1,3}(\.\d{1,3}){3}$/.test(host) || host.includes(":");
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
      normalize_path: true,
      merge_slashes: true,
      // A client has 10 s to send a request's headers once it opened the stream.
      request_headers_timeout: "10s",
      http2_protocol_options: {
        // Detect dead clients holding streams (WatchOrder has no idle timeout).
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
      // before any token is asked for. Then the token (jwt_authn) and role (rbac) checks, whose
      // refusals localReplies puts in its caller's protocol. The router last.
      http_filters: [
        edgeProtocols(services),
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
            },
          ),
        },
        healthByName(services),
        {
          name: "envoy.filters.http.cors",
          typed_config: typed("envoy.extensions.filters.http.cors.v3.Cors"),
        },
        grpcStats(services),
        jwtAuthn(topology, services),
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
    overload_manager: overloadManager(),
  };
}

/**
 * Bounds on what clients can make Envoy hold: downstream connections (Envoy warns at startup
 * without a limit), and its heap. Each stream's reply waits in Envoy's buffers, up to the
 * connection's buffer limit, until its caller reads it; callers that never read would grow the
 * heap without end. Near the budget, Envoy first resets the streams holding the most buffered
 * bytes (1 MiB and up are tracked), then returns memory to the system, then refuses new requests.
 */
function overloadManager() {
  const HEAP = "envoy.resource_monitors.fixed_heap";
  return {
    refresh_interval: "0.25s",
    resource_monitors: [
      {
        name: "envoy.resource_monitors.global_downstream_max_connections",
        typed_config: typed(
          "envoy.extensions.resource_monitors.downstream_connections.v3.DownstreamConnectionsConfig",
          { max_active_downstream_connections: 50_000 },
        ),
      },
      {
        name: HEAP,
        typed_config: typed("envoy.extensions.resource_monitors.fixed_heap.v3.FixedHeapConfig", {
          max_heap_size_bytes: ENVOY_HEAP_MIB * 1024 * 1024,
        }),
      },
    ],
    buffer_factory_config: { minimum_account_to_track_power_of_two: 20 },
    actions: [
      {
        name: "envoy.overload_actions.reset_high_memory_stream",
        triggers: [{ name: HEAP, scaled: { scaling_threshold: 0.8, saturation_threshold: 0.95 } }],
      },
      {
        name: "envoy.overload_actions.shrink_heap",
        triggers: [{ name: HEAP, threshold: { value: 0.9 } }],
      },
      {
        name: "envoy.overload_actions.stop_accepting_requests",
        triggers: [{ name: HEAP, threshold: { value: 0.98 } }],
      },
    ],
  };
}

/** Health and reflection go to the first cluster (in registry order) that has replicas. */
function infraCluster(clusterNames: readonly string[], topology: EnvoyTopology): string {
  const withReplicas = clusterNames.find((name) => (topology.services[name]?.length ?? 0) > 0);
  return withReplicas ?? (clusterNames[0] as string);
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

/** The repo's descriptor set, as Envoy opens it when it runs from the repo root. */
const DESCRIPTOR = "gen/descriptor/shop.binpb";

/** The development credentials (`npm run certs`), as Envoy opens them from the repo root. */
const DEV_CERTS = ".certs";

/** The edge identity and JWKS in a credentials folder (`npm run certs` names). */
export const edgeCredentials = (dir: string) => ({
  tls: { cert: `${dir}/edge.crt`, key: `${dir}/edge.key`, ca: `${dir}/ca.crt` },
  jwt: { jwksPath: `${dir}/jwks.json`, issuer: DEV_ISSUER, audience: DEV_AUDIENCE },
});

/**
 * A front door on 127.0.0.1:8080 (admin :9901) in front of `endpoints`, which names the replicas
 * of every public registered service.
 */
export function frontDoorTopology(
  endpoints: Record<string, readonly Endpoint[]>,
  registry: ServiceRegistry = defaultRegistry,
): EnvoyTopology {
  const services: Record<string, readonly Endpoint[]> = {};
  for (const service of registry.services) {
    if (service.publicServices.length > 0) {
      services[service.name] = endpoints[service.name] ?? [];
    }
  }
  return {
    listen: { address: "127.0.0.1", port: 8080 },
    admin: { address: "127.0.0.1", port: 9901 },
    // Relative: Envoy must run from the repo root.
    descriptorPath: DESCRIPTOR,
    services,
    // TLS at the edge and mutual TLS to the services, with the development credentials.
    ...edgeCredentials(DEV_CERTS),
    corsOrigins: [],
  };
}

/**
 * The mesh on this machine (`npm run mesh`): `replicas` of each service, on port + 10 × i, and
 * the stats listener on :9902.
 */
export function localTopology(replicas = 2, registry = defaultRegistry): EnvoyTopology {
  const topology = frontDoorTopology(
    Object.fromEntries(
      registry.services.map((service) => [
        service.name,
        Array.from({ length: replicas }, (_, i) => ({
          host: "127.0.0.1",
          port: service.port + 10 * i,
        })),
      ]),
    ),
    registry,
  );
  return { ...topology, stats: { address: "127.0.0.1", port: 9902 } };
}

/**
 * Each service by one DNS name, its own, on its registry port: every address the name resolves to
 * is a replica (a compose service, a Kubernetes headless Service). Listens on every interface.
 */
export function dnsTopology(registry: ServiceRegistry = defaultRegistry): EnvoyTopology {
  const topology = frontDoorTopology(
    Object.fromEntries(
      registry.services.map((service) => [
        service.name,
        [{ host: service.name, port: service.port }],
      ]),
    ),
    registry,
  );
  return { ...topology, listen: { address: "0.0.0.0", port: topology.listen.port } };
}

/**
 * Where compose mounts its secrets (deploy/compose.ts): the edge's certificate and key, the CA,
 * the JWKS.
 */
export const COMPOSE_SECRETS = "/run/secrets";

/**
 * docker compose: one DNS name per service (scale with `--scale`), the repo mounted at /app, the
 * credentials mounted as secrets, issuer and audience as `npm run certs -- --production` makes
 * them unless SHOP_JWT_ISSUER and SHOP_JWT_AUDIENCE say otherwise when the file is generated.
 */
export function composeTopology(registry = defaultRegistry): EnvoyTopology {
  return {
    ...dnsTopology(registry),
    // Scrapers on the compose network reach the stats listener; the admin stays on loopback.
    stats: { address: "0.0.0.0", port: 9902 },
    descriptorPath: `/app/${DESCRIPTOR}`,
    tls: {
      cert: `${COMPOSE_SECRETS}/edge_cert`,
      key: `${COMPOSE_SECRETS}/edge_key`,
      ca: `${COMPOSE_SECRETS}/mesh_ca`,
    },
    jwt: { jwksPath: `${COMPOSE_SECRETS}/jwks`, issuer: PRODUCTION_ISSUER, audience: DEV_AUDIENCE },
  };
}

// Observability: gRPC stats per method, Prometheus stats on a listener of their own, and the
// OpenTelemetry tracer. Each piece is one function the bootstrap above composes.

/**
 * Envoy's grpc_stats filter: per-method counts by status (`envoy_cluster_grpc_*` in Prometheus)
 * and upstream times for every routed rpc, named in an allowlist so an unknown path cannot grow
 * the stats without bound. Before jwt_authn and rbac, so their refusals are counted too.
 */
function grpcStats(services: readonly GrpcService[]) {
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
function grpcStatsTags(clusters: readonly string[]) {
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
function statsListener(topology: EnvoyTopology) {
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

const SAMPLERS = "envoy.extensions.tracers.opentelemetry.samplers.v3";

/** The HTTP connection manager's tracing: Envoy's OpenTelemetry tracer, W3C trace context. */
function edgeTracing(topology: EnvoyTopology) {
  if (!topology.tracing) return {};
  return {
    // Sample at random, not by the x-request-id: a caller's own id (kept at the edge) is no
    // UUID, and a trace decision tied to it would leave those calls untraced.
    request_id_extension: {
      typed_config: typed("envoy.extensions.request_id.uuid.v3.UuidRequestIdConfig", {
        use_request_id_for_trace_sampling: false,
      }),
    },
    tracing: {
      // Every request goes to the tracer's sampler, which decides.
      random_sampling: { value: 100 },
      provider: {
        name: "envoy.tracers.opentelemetry",
        typed_config: typed("envoy.config.trace.v3.OpenTelemetryConfig", {
          grpc_service: { envoy_grpc: { cluster_name: COLLECTOR_CLUSTER }, timeout: "1s" },
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

/** The clusters the stats listener and the tracer need: the admin on loopback, the collector. */
function observabilityClusters(topology: EnvoyTopology) {
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
  if (topology.tracing) clusters.push(plain(COLLECTOR_CLUSTER, topology.tracing.collector, true));
  return clusters;
}
