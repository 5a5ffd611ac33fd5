// CORS: the headers a browser client sends and reads, and the allowed origins as a pattern.

// Headers a gRPC-Web, Connect or REST client in a browser sends and reads.
export const CORS_ALLOW_HEADERS = [
  "authorization",
  "cache-control",
  "connect-protocol-version",
  "connect-timeout-ms",
  "content-transfer-encoding",
  "content-type",
  "grpc-timeout",
  "keep-alive",
  "shopmesh-page-bytes",
  "user-agent",
  "x-accept-content-transfer-encoding",
  "x-accept-response-streaming",
  "x-grpc-web",
  "x-request-id",
  "x-user-agent",
];
export const CORS_EXPOSE_HEADERS = [
  "grpc-message",
  "grpc-status",
  "grpc-status-details-bin",
  "x-request-id",
];

const SOME = { safe_regex: { regex: ".+" } };

/** A route header match: any OPTIONS request. */
export const OPTIONS_METHOD = { name: ":method", string_match: { exact: "OPTIONS" } };

/** A route header match: the method a preflight asks for, not empty. */
export const REQUESTED_METHOD = { name: "access-control-request-method", string_match: SOME };

/**
 * A CORS preflight, as the CORS filter reads one: OPTIONS with an origin and a method to ask for.
 * Only such a request skips the token checks (auth.ts). The CORS filter answers it when its
 * origin is allowed, and a route refuses every other OPTIONS (routes.ts), so none reaches a
 * service.
 */
export const PREFLIGHT = [OPTIONS_METHOD, { name: "origin", string_match: SOME }, REQUESTED_METHOD];

/** A header match turned around: the header is missing, or does not match. */
export const lacking = <H extends object>(header: H) => ({
  ...header,
  invert_match: true,
  treat_missing_header_as_empty: true,
});

/** `^(a|b)$` for exact origins, each escaped. */
export function originPattern(origins: readonly string[]): string {
  return `^(${origins.map((origin) => origin.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})$`;
}

/** A route header match: the request comes from one of `origins`. */
export const fromOrigin = (origins: readonly string[]) => ({
  name: "origin",
  string_match: { safe_regex: { regex: originPattern(origins) } },
});

interface DirectRoute {
  name: string;
  match: { headers?: readonly object[] } & Record<string, unknown>;
  response_headers_to_add?: readonly object[];
}

/**
 * An answer of Envoy's own that a browser on an allowed origin can read. The CORS filter skips a
 * route without an upstream, so without these headers the browser would hide the reply's status
 * and details from the page: a copy of the route for the allowed origins adds the headers the
 * filter would have. Other origins get the route as it was.
 */
export function readableByBrowsers<R extends DirectRoute>(
  origins: readonly string[],
  route: R,
): R[] {
  if (origins.length === 0) return [route];
  const add = (key: string, value: string) => ({
    header: { key, value },
    append_action: "OVERWRITE_IF_EXISTS_OR_ADD",
  });
  const forBrowsers = {
    ...route,
    name: `${route.name} (allowed origin)`,
    match: { ...route.match, headers: [...(route.match.headers ?? []), fromOrigin(origins)] },
    response_headers_to_add: [
      ...(route.response_headers_to_add ?? []),
      add("access-control-allow-origin", "%REQ(origin)%"),
      add("access-control-expose-headers", CORS_EXPOSE_HEADERS.join(",")),
    ],
  };
  return [forBrowsers, route];
}
