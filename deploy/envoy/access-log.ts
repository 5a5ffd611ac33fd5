// Envoy's JSON access log: its fields, and the two logs that write them (native gRPC, the rest).

import { typed } from "./matchers.js";

/** The dynamic metadata the Lua filters record for the access log (NAMESPACE in lua/). */
const EDGE_METADATA = "shopmesh.edge";

/** The JSON access log fields: one line per request, on stdout or `accessLogPath`. */
export const ACCESS_LOG_FORMAT = {
  start_time: "%START_TIME%",
  // The method the client sent (the transcoder makes every REST call a POST).
  method: "%DYNAMIC_METADATA(shopmesh.edge:method)%",
  // The path the client sent, without its query: the REST path for transcoded calls (the
  // transcoder keeps it in x-envoy-original-path), else the gRPC path. Kept to a bound too: HPACK
  // lets a caller send a 4 KB path again as one byte.
  path: "%PATH(NQ:ORIG_OR_PATH):256%",
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
export function accessLogs(accessLogPath: string | undefined) {
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
