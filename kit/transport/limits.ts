// HTTP/2 limits the services set and Envoy must know: it does not read them from the
// services' SETTINGS (envoy #13933).

/**
 * Calls one client connection may hold open on a service at once (SETTINGS_MAX_CONCURRENT_STREAMS;
 * unbounded by default): ten times what Envoy lets one of its own callers open. A client past it
 * waits for a slot; Envoy opens another connection.
 */
export const MAX_CONCURRENT_STREAMS = 1_000;
