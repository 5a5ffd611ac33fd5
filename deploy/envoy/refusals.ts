// Envoy's own refusals (token, role, grpc-timeout, deadline, no route) with the code and ErrorInfo
// a service would send, as gRPC and gRPC-Web callers get them.

import { encodeStatus, ServiceError } from "../../kit/errors.js";
import { when } from "./matchers.js";

/** The ErrorInfo domain of the refusals Envoy sends itself. */
export const EDGE_DOMAIN = "shopmesh.edge";

export const ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo";

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
    // The caller's bucket is empty (rate-limit.ts): resend after a backoff.
    details: "local_rate_limited",
    status: 429,
    code: 8,
    reason: "RATE_LIMITED",
    message: "too many calls from this caller; resend after a backoff",
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
    // Short of heap (OVERLOADED), Envoy also cuts calls idle for a second (otherwise only after
    // a day, config.ts): one whose request had not arrived whole reached no service (408).
    details: "stream_idle_timeout",
    when: "response.code_details == 'stream_idle_timeout' && response.code == 408",
    status: 503,
    code: 14,
    reason: "EDGE_OVERLOADED",
    message: "the edge is short of memory; resend after a backoff",
  },
  {
    // One whose service had the request and had not answered (504) may have been done, as a
    // call whose deadline passed: resend it with its request_id, where the rpc takes one.
    details: "stream_idle_timeout",
    status: 504,
    code: 4,
    reason: "EDGE_OVERLOADED",
    message: "the edge is short of memory and cut the call before its service answered",
  },
  {
    // The request did not arrive whole in time (config.ts request_timeout). Envoy's own answer
    // would be UNKNOWN.
    details: "request_overall_timeout",
    status: 408,
    code: 4,
    reason: "REQUEST_TIMEOUT",
    message: "the request did not arrive in full in time",
  },
  {
    // A unary call ran 15 s (routes.ts UNARY_TIMEOUT) without a reply.
    details: "max_duration_timeout",
    status: 504,
    code: 4,
    reason: "DEADLINE_EXCEEDED",
    message: "the deadline passed at the edge",
  },
] as const;

/** CEL: the local reply is this refusal of Envoy's, by the response code details it set. */
export const refusedBy = (refusal: (typeof EDGE_REFUSALS)[number]) =>
  "when" in refusal
    ? refusal.when
    : `response.code_details.startsWith('${refusal.details.replace(/}$/, "")}')`;

/** Envoy's answer for a path with no route (grpc-not-found), as a service lacking the method. */
export const UNROUTED = {
  when: "response.code_details == 'direct_response' && response.code == 404",
  code: 12,
  reason: "UNKNOWN_METHOD",
  message: "unknown service or method",
} as const;

/** CEL: edgeProtocols (lua/edge.lua) marked the call as `protocol`'s, as it read its headers. */
export const markedAs = (protocol: "rest" | "connect" | "grpc-web") =>
  `metadata.filter_metadata['${EDGE_DOMAIN}']['protocol'] == '${protocol}'`;

/** CEL: a gRPC-Web call (the gRPC-Web filter rewrote its content type). */
const GRPC_WEB = markedAs("grpc-web");

/** A header Envoy's reply sets, over any of the same name. */
const header = (key: string, value: string) => ({
  header: { key, value },
  append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
});

/** What an answer of Envoy's own says: its code, message and ErrorInfo reason. */
interface EdgeReply {
  code: number;
  message: string;
  reason: string;
}

/** grpc-status-details-bin of `reply`: a google.rpc.Status with the edge's ErrorInfo. */
const detailsOf = (reply: EdgeReply) =>
  header(
    "grpc-status-details-bin",
    encodeStatus(
      new ServiceError(reply.code, reply.message, { reason: reply.reason }),
      EDGE_DOMAIN,
    ).toString("base64"),
  );

/**
 * `reply` to a gRPC-Web call when `condition` holds: a trailers-only 200, as the protocol has a
 * server answer. A client reads the code of another HTTP status from the status alone
 * (UNAVAILABLE for a 504), and throws away the details; a body would make the gRPC-Web filter
 * answer UNKNOWN.
 */
const grpcWebReply = (condition: string, reply: EdgeReply, isGrpcWeb = GRPC_WEB) => ({
  headers_to_add: [
    header("grpc-status", String(reply.code)),
    detailsOf(reply),
    header("grpc-message", reply.message),
  ],
  filter: when(`${condition} && ${isGrpcWeb}`),
  status_code: 200,
  body: { inline_string: "" },
});

export function edgeRefusals() {
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
    return [
      {
        // A REST call: marked so, or transcoded. One refused before its body arrived whole was
        // never transcoded, and would get the bare text below.
        filter: when(
          `${refused} && (${markedAs("rest")} || 'x-envoy-original-path' in request.headers)`,
        ),
        status_code: refusal.status,
        // For the access log only: edgeProtocols records it and strips it from the reply.
        headers_to_add: [header("grpc-status", String(refusal.code))],
        body_format_override: {
          text_format_source: { inline_string: JSON.stringify(status) },
          content_type: "application/json",
        },
      },
      grpcWebReply(refused, refusal),
      {
        headers_to_add: [header("grpc-status", String(refusal.code)), detailsOf(refusal)],
        body: { inline_string: refusal.message },
        filter: when(refused),
        status_code: refusal.status,
      },
    ];
  });
}

/**
 * Envoy's answer when no replica took a call: none was healthy, or every attempt failed before
 * its reply began. UNAVAILABLE, which any caller may resend (REST callers get it from rest.ts).
 */
export const NO_REPLICA = {
  when: "response.code == 503",
  code: 14,
  reason: "UNAVAILABLE",
  message: "no replica of the service could take the call",
} as const;

/**
 * A request larger than a filter that holds it whole takes (lua/health.lua's health checks, over
 * 64 KiB), as a service answers a message over its limit.
 */
export const TOO_LARGE = {
  when: "response.code_details == 'request_payload_too_large'",
  code: 8,
  reason: "REQUEST_TOO_LARGE",
  message: "the request is larger than the edge takes for this call",
} as const;

/**
 * Short of heap, Envoy refuses new requests (overload-manager.ts) before any filter has read the
 * call's protocol: each door's reply finds it by the request's headers.
 */
export const OVERLOADED = {
  when: "response.code_details == 'overload'",
  status: 503,
  code: 14,
  reason: "EDGE_OVERLOADED",
  message: "the edge is short of memory; resend after a backoff",
} as const;

/** CEL: the request's content type starts with `prefix`. */
export const contentTypeIs = (prefix: string) =>
  `('content-type' in request.headers && request.headers['content-type'].startsWith('${prefix}'))`;

/**
 * A path Envoy will not normalize (config.ts normalize_path), such as one with a NUL: no method has
 * it, and a service answers such a path as a method it lacks. Envoy's own answer is a 400 without
 * a body, which a gRPC client reads as INTERNAL.
 */
export const PATH_UNREADABLE = {
  when: "response.code_details == 'path_normalization_failed'",
  code: 12,
  reason: "UNKNOWN_METHOD",
  message: "unknown service or method: the path cannot be read",
} as const;

/**
 * Envoy's other answers to gRPC and gRPC-Web calls: no route (grpc-not-found) or a path it cannot
 * read, UNIMPLEMENTED with the ErrorInfo a service sends for a method it lacks; no replica or no
 * heap, UNAVAILABLE; a request too large to hold, RESOURCE_EXHAUSTED. Each carries its ErrorInfo,
 * and a gRPC-Web one is a trailers-only 200, as the refusals are.
 */
export function edgeGrpcReplies() {
  const grpc = contentTypeIs("application/grpc");
  const grpcWeb = contentTypeIs("application/grpc-web");
  // Envoy's code for a 413 is UNKNOWN, and its message "Payload Too Large"; for a 400, INTERNAL.
  const grpcReply = (reply: EdgeReply & { when: string }) => ({
    filter: when(`${reply.when} && ${grpc}`),
    headers_to_add: [header("grpc-status", String(reply.code)), detailsOf(reply)],
    body: { inline_string: reply.message },
  });
  return [
    // Refused before any filter ran, so known by the content type alone; before NO_REPLICA,
    // which is any 503.
    grpcWebReply(OVERLOADED.when, OVERLOADED, grpcWeb),
    grpcReply(OVERLOADED),
    ...[UNROUTED, NO_REPLICA].flatMap((reply) => [
      grpcWebReply(reply.when, reply),
      // Envoy sends a gRPC call's local reply with its code already, and the body as its message.
      { filter: when(`${reply.when} && ${grpc}`), headers_to_add: [detailsOf(reply)] },
    ]),
    grpcWebReply(TOO_LARGE.when, TOO_LARGE),
    // Refused before any filter ran, so known as gRPC-Web by its content type alone.
    grpcWebReply(PATH_UNREADABLE.when, PATH_UNREADABLE, grpcWeb),
    grpcReply(TOO_LARGE),
    grpcReply(PATH_UNREADABLE),
  ];
}
