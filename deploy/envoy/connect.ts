// The Connect protocol at the edge: the bridge to gRPC, the rpcs a GET may call, and Envoy's own
// replies as Connect errors.

import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { Code, encodeStatus, ServiceError } from "../../kit/errors.js";
import { headerMatches, skippedFor, typed, when } from "./matchers.js";
import {
  contentTypeIs,
  EDGE_DOMAIN,
  EDGE_REFUSALS,
  markedAs,
  NO_REPLICA,
  OVERLOADED,
  refusedBy,
  UNROUTED,
} from "./refusals.js";
import type { GrpcService } from "./topology.js";

/**
 * The Connect protocol (unary and streaming, POST and GET) at the edge: Envoy's bridge turns it
 * into gRPC before every other filter, and the reply back into Connect. It is skipped for gRPC
 * (and gRPC-Web, which its filter has made gRPC by then): the bridge takes any POST with a
 * connect-protocol-version header for a Connect call, and would frame a gRPC body again.
 */
export function connectBridge() {
  return skippedFor(headerMatches("content-type", { prefix: "application/grpc" }), {
    name: "envoy.filters.http.connect_grpc_bridge",
    typed_config: typed("envoy.extensions.filters.http.connect_grpc_bridge.v3.FilterConfig"),
  });
}

/**
 * The rpcs a Connect client may send as an HTTP GET: unary and NO_SIDE_EFFECTS, as the Connect
 * protocol says. lua/edge.lua refuses a GET for any other path with 405.
 */
export function connectGetPaths(services: readonly GrpcService[]): Record<string, true> {
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

/** The paths of every rpc the edge serves: a GET of any other is answered as a POST of it. */
export function connectRpcPaths(services: readonly GrpcService[]): Record<string, true> {
  return Object.fromEntries(services.flatMap((s) => s.methods.map((m) => [m.path, true])));
}

/** The paths of the server-streaming rpcs, which Connect calls only as streams. */
export function connectStreamPaths(services: readonly GrpcService[]): Record<string, true> {
  const paths: Record<string, true> = {};
  for (const service of services) {
    for (const method of service.methods) if (method.kind !== "unary") paths[method.path] = true;
  }
  return paths;
}

/** A Connect error body of Envoy's own (UNIMPLEMENTED unless `code` says), with its ErrorInfo. */
function connectRefusal(reason: string, message: string, code = "unimplemented"): string {
  const info = ErrorInfo.encode({ reason, domain: EDGE_DOMAIN, metadata: {} }).finish();
  return JSON.stringify({
    code,
    message,
    details: [
      {
        type: "google.rpc.ErrorInfo",
        value: Buffer.from(info).toString("base64").replace(/=+$/, ""),
      },
    ],
  });
}

/** The Connect error a refused GET gets. */
export const connectGetRefusal = () =>
  connectRefusal(
    "METHOD_NOT_ALLOWED",
    "only a unary rpc without side effects may be sent as a GET; send it as a POST",
  );

/**
 * The Connect error a GET that gives one of its query parameters twice gets (400): Envoy's bridge
 * would take the first `message`, and another reader of the URL (a cache, a log) the last.
 */
export const connectGetRepeatRefusal = () =>
  connectRefusal(
    "MALFORMED_REQUEST",
    "a Connect GET gives each of its query parameters once",
    "invalid_argument",
  );

/**
 * The Connect error a request that says connect=v1 in its query but is not a GET gets (400):
 * Envoy's bridge would take it for a GET, whatever its method, and call the rpc with the query's
 * message.
 */
export const connectQueryRefusal = () =>
  connectRefusal(
    "MALFORMED_REQUEST",
    "connect=v1 in the query makes a Connect GET, which only the GET method may send; a POST carries its message in the body",
    "invalid_argument",
  );

/**
 * The Connect error a call whose connect-timeout-ms is not up to 10 digits gets (400): the bridge
 * would drop it without a word, and the call would run on the edge's default deadline.
 */
export const connectTimeoutRefusal = () =>
  connectRefusal(
    "MALFORMED_REQUEST",
    "connect-timeout-ms is not a timeout (up to 10 digits, in milliseconds)",
    "invalid_argument",
  );

/**
 * The Connect error a GET whose base64 message is not base64url, or does not decode to whole
 * bytes, gets (400): the bridge would read it as no message at all, and call the rpc with an
 * empty request.
 */
export const connectMessageRefusal = () =>
  connectRefusal(
    "MALFORMED_REQUEST",
    "a Connect GET's base64 message is base64url (A-Z a-z 0-9 - _), padded or not, whole bytes with no stray bits",
    "invalid_argument",
  );

/**
 * The gRPC-Web error (its message and grpc-status-details-bin) for a call in a content type
 * Envoy's gRPC-Web filter does not take (application/grpc-web+json, say): UNIMPLEMENTED, as
 * Connect in another codec is.
 */
export const grpcWebCodecRefusal = () => {
  const message =
    "this edge speaks gRPC-Web with the proto codec only (application/grpc-web+proto)";
  const error = new ServiceError(Code.UNIMPLEMENTED, message, { reason: "UNSUPPORTED_CODEC" });
  return { message, details: encodeStatus(error, EDGE_DOMAIN).toString("base64") };
};

/**
 * The Connect error a unary request (application/proto) to a server-streaming rpc gets (415), as
 * Connect's own servers answer it: the bridge would pass on the stream's messages as one broken
 * reply, and only once the stream ended.
 */
export const connectUnaryOnStreamRefusal = () =>
  connectRefusal(
    "UNSUPPORTED_CODEC",
    "this rpc streams its reply: call it as a Connect stream (application/connect+proto)",
  );

/**
 * The Connect error a GET with a request body gets (400): the bridge would answer the body's
 * message, and a cache keyed on the URL would keep that answer for the URL's.
 */
export const connectGetBodyRefusal = () =>
  connectRefusal(
    "MALFORMED_REQUEST",
    "a Connect GET carries its message in the URL and no body",
    "invalid_argument",
  );

/** The Connect error a call in any codec but proto gets (415). */
export const connectCodecRefusal = () =>
  connectRefusal(
    "UNSUPPORTED_CODEC",
    "this edge speaks Connect with the proto codec only; use application/proto (or REST for JSON)",
  );

/**
 * Connect's names of the codes Envoy's own replies carry, and each one's HTTP status in a unary
 * reply, as the Connect protocol has them now (lua/edge.lua sets the same for the bridge's
 * translations): 504 and 501, where Envoy's 408 told a browser it may send the request again.
 */
const CONNECT_CODES: Record<number, readonly [string, number]> = {
  3: ["invalid_argument", 400],
  4: ["deadline_exceeded", 504],
  7: ["permission_denied", 403],
  8: ["resource_exhausted", 429],
  12: ["unimplemented", 501],
  14: ["unavailable", 503],
  16: ["unauthenticated", 401],
};

/**
 * A Connect unary body past the stream's buffer (64 KiB over HTTP/2, the stream window), which
 * the bridge must hold whole: as REST's 413, RESOURCE_EXHAUSTED. Envoy sends it as bare text,
 * which Connect clients read as UNKNOWN. A body of exactly the buffer's size meets the limit in
 * lua/edge.lua, which holds a body that size whole, rather than in the bridge.
 */
const CONNECT_TOO_LARGE = {
  when: "response.code_details in ['connect_bridge_unary_request_too_large', 'request_payload_too_large']",
  code: 8,
  reason: "REQUEST_TOO_LARGE",
  message: "the request is larger than the edge buffers for a Connect call",
} as const;

/**
 * The page bytes the edge asks for a Connect call (PAGE_BYTES_KEY), by the HTTP version it came
 * in on: under what the bridge holds of a unary reply (64 KiB over HTTP/2, 1 MiB over HTTP/1.1),
 * less room for the page token and the framing. Any other version gets the smallest.
 */
export const CONNECT_PAGE_BYTES: Record<string, number> = {
  "HTTP/2": 56 * 1024,
  "HTTP/1.1": 960 * 1024,
};

/**
 * A Connect unary reply past the same buffer, which the bridge must also hold whole to take its
 * gRPC frame off: a page of ListProducts over 64 KiB, say. Envoy sends a bare 500, which Connect
 * clients read as UNKNOWN. gRPC, gRPC-Web and a Connect stream pass a reply on as it comes.
 */
const CONNECT_REPLY_TOO_LARGE = {
  when: "response.code_details == 'connect_bridge_unary_response_too_large'",
  code: 8,
  reason: "REPLY_TOO_LARGE",
  message:
    "the reply is larger than the edge buffers for a unary Connect call (64 KiB over HTTP/2, 1 MiB over HTTP/1.1): call it as a stream or over gRPC-Web",
} as const;

/** A reply of the edge's own: its condition, code, ErrorInfo reason and message. */
interface ConnectReply {
  when: string;
  code: number;
  reason: string;
  message: string;
}

/**
 * Envoy's refusals and no-route reply to a Connect call (edgeProtocols marked it), as a Connect
 * error with its ErrorInfo: for a unary call the error JSON under the refusal's HTTP status, for
 * a streaming one a 200 whose body is the end-of-stream message. Envoy would send the bare text.
 * A refusal for want of heap comes before edgeProtocols, so its call is known as Connect by its
 * headers.
 */
export function connectReplies() {
  const connect = markedAs("connect");
  const stream = "metadata.filter_metadata['shopmesh.edge']['stream'] == true";
  const streamByHeaders = contentTypeIs("application/connect+");
  const connectByHeaders = `('connect-protocol-version' in request.headers || ${streamByHeaders})`;
  return [
    ...connectReply(OVERLOADED, connectByHeaders, streamByHeaders),
    ...[
      ...EDGE_REFUSALS.map((refusal) => ({ when: refusedBy(refusal), ...refusal })),
      UNROUTED,
      NO_REPLICA,
      CONNECT_TOO_LARGE,
      CONNECT_REPLY_TOO_LARGE,
    ].flatMap((reply) => connectReply(reply, connect, stream)),
  ];
}

/** `reply` as a Connect error to calls `connect` holds for; `stream` tells a streaming one. */
function connectReply(reply: ConnectReply, connect: string, stream: string) {
  const [name, status] = CONNECT_CODES[reply.code] as readonly [string, number];
  const error = JSON.stringify({
    code: name,
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
      // Whatever Envoy's own status (a REST 408, the no-route 404): Connect's for the code.
      status_code: status,
      headers_to_add: code,
      body_format_override: {
        text_format_source: { inline_string: error },
        content_type: "application/json",
      },
    },
  ];
}

/** A Connect end-of-stream message: flags 0x02, the length, then the JSON. */
function endOfStream(json: string): Buffer {
  const body = Buffer.from(json);
  const head = Buffer.alloc(5);
  head[0] = 0x02;
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}
