// Token and role checks at the edge: jwt_authn on every routed rpc, RBAC on the admin-only ones.

import { PREFLIGHT } from "./cors.js";
import { typed } from "./matchers.js";
import type { EnvoyTopology, GrpcService } from "./topology.js";

const JWT_PROVIDER = "shopmesh";

/**
 * Envoy checks the bearer token of every routed rpc the way the services will again: required,
 * except for open rpcs, where a token is optional but must be valid when sent. Health, reflection
 * and unrouted paths need none. Rules match the gRPC path, after the transcoder rewrote a REST
 * path to it.
 */
export function jwtAuthn(topology: EnvoyTopology, services: readonly GrpcService[]) {
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
  // A CORS preflight carries no token (browsers send none): the CORS filter answers it, or the
  // route for refused preflights does, never a 401.
  const preflight = { match: { prefix: "/", headers: PREFLIGHT } };
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
      rules: [preflight, ...rules],
    }),
  };
}

/** Admin-only rpcs need role admin in the verified token; the services check it again. */
export function adminRbac(services: readonly GrpcService[]) {
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
                  and_rules: {
                    rules: [
                      {
                        or_rules: {
                          rules: paths.map((method) => ({
                            url_path: { path: { exact: method.path } },
                          })),
                        },
                      },
                      // A CORS preflight, which carries no token, is not the call.
                      {
                        not_rule: { and_rules: { rules: PREFLIGHT.map((header) => ({ header })) } },
                      },
                    ],
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
