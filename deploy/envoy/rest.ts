// JSON/REST at the edge: what the transcoder refuses, and Envoy's own replies as google.rpc.Status
// JSON.

import { PAGE_BYTES } from "../../kit/db/pages.js";
import { when } from "./matchers.js";
import { EDGE_DOMAIN, ERROR_INFO, markedAs, OVERLOADED, PATH_UNREADABLE } from "./refusals.js";

/**
 * The transcoder refuses an unknown query parameter (as an unknown body field is refused) and a
 * field bound both in the path and the body, with INVALID_ARGUMENT.
 */
export const REST_VALIDATION = {
  reject_unknown_query_parameters: true,
  reject_binding_body_field_collisions: true,
};

/**
 * The largest gRPC reply the transcoder holds to write as JSON: the 4 MB a gRPC client takes, of
 * which a page is at most half. Unset, the bound is the stream's buffer, which over HTTP/2 is the
 * 64 KiB window the edge gives each stream, and a longer page answered 500.
 */
export const REST_REPLY_BYTES = 2 * PAGE_BYTES;

/**
 * The page bytes the edge asks for a REST call (PAGE_BYTES_KEY). The transcoder holds the page
 * and its JSON, about 3.4 times as large, until the JSON is sent: with the services' 2 MB, 16
 * concurrent lists of large orders filled Envoy's heap budget (overload-manager.ts).
 */
export const REST_PAGE_BYTES = 512 * 1024;

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
  // Headers over max_request_headers_kb, refused by HTTP/1.1's codec before any filter.
  431: [8, "REQUEST_TOO_LARGE"],
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
export function restErrorReplies() {
  const rest = markedAs("rest");
  // A request Envoy refused before edgeProtocols saw it (a path it will not normalize, say) is
  // answered as REST too, unless it is gRPC or gRPC-Web.
  const unseen =
    "!('shopmesh.edge' in metadata.filter_metadata) && !('content-type' in request.headers && " +
    "request.headers['content-type'].startsWith('application/grpc'))";
  const statusBody = (code: number, reason: string) => ({
    json_format: {
      code,
      message: "%LOCAL_REPLY_BODY%",
      details: [{ "@type": ERROR_INFO, reason, domain: EDGE_DOMAIN, metadata: {} }],
    },
    content_type: "application/json",
  });
  const [code, reason] = REST_LOCAL_REPLIES[400] as [number, string];
  return [
    {
      // Before the 503 below, which would say no replica could take it.
      filter: when(`${unseen} && ${OVERLOADED.when}`),
      body: { inline_string: OVERLOADED.message },
      body_format_override: statusBody(OVERLOADED.code, OVERLOADED.reason),
    },
    {
      // Envoy's answer has no body, so no message.
      filter: when(`${unseen} && ${PATH_UNREADABLE.when}`),
      body: { inline_string: "the path cannot be read as a URL path" },
      body_format_override: statusBody(code, reason),
    },
    ...Object.entries(REST_LOCAL_REPLIES).flatMap(([status, [code, reason]]) => [
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
        body_format_override: statusBody(code, reason),
      },
      {
        filter: when(`${unseen} && response.code == ${status}`),
        body_format_override: statusBody(code, reason),
      },
    ]),
  ];
}
