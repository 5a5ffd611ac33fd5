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

/** `^(a|b)$` for exact origins, each escaped. */
export function originPattern(origins: readonly string[]): string {
  return `^(${origins.map((origin) => origin.replace(/[.*+?^${}()|[\]\\]/g, "\\$&")).join("|")})$`;
}
