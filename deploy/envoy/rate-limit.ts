// Calls per caller at the edge: a token bucket for each token subject, and for each client address
// among calls that carry no token (Envoy's local_ratelimit, dynamic descriptors).

import { typed } from "./matchers.js";
import type { EnvoyTopology } from "./topology.js";

/**
 * How many subjects' buckets Envoy keeps, and as many addresses': the least recently seen goes
 * first, and comes back with a full bucket. A bucket takes about 500 bytes of Envoy's heap
 * (12,000 addresses measured), so both kinds full take some 10 MB of its 128 MiB budget.
 */
export const RATE_LIMITED_CALLERS = 10_000;

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

/**
 * The filter, after jwt_authn (whose verified payload names the subject), or none when the
 * topology sets no limit. A subject's calls share one bucket from every address; a call without
 * a token, which only open rpcs take, counts against its address, as Envoy sees it (with
 * `use_remote_address`, the peer of the connection).
 */
export function edgeRateLimit(topology: EnvoyTopology) {
  const limit = topology.rateLimit;
  if (!limit) return [];
  const bucket = {
    max_tokens: limit.calls,
    tokens_per_fill: limit.calls,
    fill_interval: `${limit.seconds}s`,
  };
  const subject = {
    descriptor_key: SUBJECT,
    metadata_key: {
      key: "envoy.filters.http.jwt_authn",
      path: [{ key: "jwt_payload" }, { key: "sub" }],
    },
  };
  const all = { default_value: { numerator: 100, denominator: "HUNDRED" } };
  return [
    {
      name: "envoy.filters.http.local_ratelimit",
      typed_config: typed("envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit", {
        stat_prefix: "edge_rate_limit",
        filter_enabled: all,
        filter_enforced: all,
        // A refused gRPC call is RESOURCE_EXHAUSTED, not UNAVAILABLE, which clients resend at once.
        rate_limited_as_resource_exhausted: true,
        // A descriptor that matches none below (a token call's second) takes from no bucket.
        always_consume_default_token_bucket: false,
        max_dynamic_descriptors: RATE_LIMITED_CALLERS,
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
    },
  ];
}
