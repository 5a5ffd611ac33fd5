// Calls per caller at the edge: a token bucket for each token subject, and for each client address
// among calls that carry no token (Envoy's local_ratelimit, dynamic descriptors); and a looser one
// for each address before any token is checked.

import { typed } from "./matchers.js";
import type { EnvoyTopology } from "./topology.js";

/**
 * How many subjects' buckets Envoy keeps, and as many addresses': the least recently seen goes
 * first, and comes back with a full bucket. A bucket takes about 500 bytes of Envoy's heap
 * (12,000 addresses measured), so both kinds full take some 10 MB of its 128 MiB budget.
 */
export const RATE_LIMITED_CALLERS = 10_000;

/**
 * How many times a caller's limit one address may send before its tokens are checked: room for
 * many signed-in callers behind one address, and a bound on the signature checks of tokens that
 * fail, which the limit after jwt_authn never counts.
 */
export const ADDRESS_CALLS_PER_CALLER = 10;

/** The descriptor of a call with a verified token: its subject. */
const SUBJECT = "subject";

/** Whether the call carries a verified token (jwt_authn left its payload): "token" or "none". */
const SIGNED_IN = {
  extension: {
    name: "envoy.rate_limit_descriptors.expr",
    typed_config: typed("envoy.extensions.rate_limit_descriptors.expr.v3.Descriptor", {
      descriptor_key: "caller",
      text: "'envoy.filters.http.jwt_authn' in metadata.filter_metadata ? 'token' : 'none'",
    }),
  },
};

/** One second's calls, `calls` at most, per `seconds`. */
const bucketOf = (calls: number, seconds: number) => ({
  max_tokens: calls,
  tokens_per_fill: calls,
  fill_interval: `${seconds}s`,
});

const ALL = { default_value: { numerator: 100, denominator: "HUNDRED" } };

/** A local_ratelimit filter named `name`, counting `config`'s descriptors. */
const rateLimitFilter = (name: string, config: Record<string, unknown>) => ({
  name,
  typed_config: typed("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
    filter_enabled: ALL,
    filter_enforced: ALL,
    // A refused gRPC call is RESOURCE_EXHAUSTED, not UNAVAILABLE, which clients resend at once.
    rate_limited_as_resource_exhausted: true,
    // A descriptor that matches none of the filter's (a token call's second) takes from no bucket.
    always_consume_default_token_bucket: false,
    max_dynamic_descriptors: RATE_LIMITED_CALLERS,
    ...config,
  }),
});

/**
 * The filter before jwt_authn, or none when the topology sets no limit: each client address, as
 * Envoy sees it (with `use_remote_address`, the peer of the connection), may send
 * ADDRESS_CALLS_PER_CALLER times a caller's calls, whatever their tokens.
 */
export function addressRateLimit(topology: EnvoyTopology) {
  const limit = topology.rateLimit;
  if (!limit) return [];
  return [
    rateLimitFilter("shopmesh.address_rate_limit", {
      stat_prefix: "edge_address_rate_limit",
      rate_limits: [{ actions: [{ remote_address: {} }] }],
      descriptors: [
        {
          entries: [{ key: "remote_address", value: "" }],
          token_bucket: bucketOf(limit.calls * ADDRESS_CALLS_PER_CALLER, limit.seconds),
        },
      ],
    }),
  ];
}

/**
 * The filter after jwt_authn (whose verified payload names the subject), or none when the
 * topology sets no limit. A subject's calls share one bucket from every address; a call without
 * a token, which only open rpcs take, counts against its address.
 */
export function callerRateLimit(topology: EnvoyTopology) {
  const limit = topology.rateLimit;
  if (!limit) return [];
  const bucket = bucketOf(limit.calls, limit.seconds);
  const subject = {
    descriptor_key: SUBJECT,
    metadata_key: {
      key: "envoy.filters.http.jwt_authn",
      path: [{ key: "jwt_payload" }, { key: "sub" }],
    },
  };
  return [
    rateLimitFilter("envoy.filters.http.local_ratelimit", {
      stat_prefix: "edge_rate_limit",
      rate_limits: [
        { actions: [{ metadata: { ...subject, skip_if_absent: true } }] },
        { actions: [SIGNED_IN, { remote_address: {} }] },
      ],
      descriptors: [
        { entries: [{ key: SUBJECT, value: "" }], token_bucket: bucket },
        {
          entries: [
            { key: "caller", value: "none" },
            { key: "remote_address", value: "" },
          ],
          token_bucket: bucket,
        },
      ],
    }),
  ];
}
