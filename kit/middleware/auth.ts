import {
  type AccessRule,
  bearerToken,
  CALLER,
  permissionDenied,
  type TokenVerifier,
  unauthenticated,
} from "../auth.js";
import { peerIdentity } from "../tls.js";
import type { ClientMiddleware, ServerMiddleware } from "./types.js";

const AUTHORIZATION = "authorization";

export interface AuthOptions {
  /** Each rpc's rule, by path ("/shop.user.v1.UserService/GetUser"). */
  rules: ReadonlyMap<string, AccessRule>;
  verifier: TokenVerifier;
  /**
   * True when the server runs mutual TLS, so every caller has a mesh identity. Without it (the
   * development profile, plaintext on loopback) there are no identities and internal rpcs are
   * open to the machine.
   */
  mtls: boolean;
}

/**
 * Authentication and the access rule of each rpc, before anything else of the call runs. It reads
 * only what a caller cannot forge: the bearer token, verified here (never a header Envoy might
 * have added), and the mTLS peer certificate. A verified caller is in `ctx.get(CALLER)` and its
 * user id in every log line. Refusals are UNAUTHENTICATED (TOKEN_MISSING, TOKEN_EXPIRED,
 * TOKEN_INVALID) or PERMISSION_DENIED (ADMIN_REQUIRED, INTERNAL_API); ownership is the handlers'
 * (kit/auth.ts requireOwner), where the data is read.
 */
export function authServer(options: AuthOptions): ServerMiddleware {
  return {
    name: "auth",
    wrap(method, next) {
      const rule = options.rules.get(method.path);
      // Fail closed: an rpc without a rule never serves.
      if (!rule) throw new Error(`${method.path} declares no access rule`);
      if (rule.kind === "internal") {
        return (request, ctx) => {
          if (options.mtls) {
            const identity = peerIdentity(ctx.auth);
            if (identity === undefined || !rule.callers.includes(identity)) {
              return Promise.reject(
                permissionDenied(
                  "INTERNAL_API",
                  `${method.service} is internal to the mesh: only ${rule.callers.join(", ")} may call it`,
                ),
              );
            }
            ctx.logFields.peer_identity = identity;
          }
          return next(request, ctx);
        };
      }
      return async (request, ctx) => {
        const token = bearerToken(ctx.metadata.get(AUTHORIZATION));
        if (token === undefined) {
          if (rule.kind !== "open")
            throw unauthenticated("TOKEN_MISSING", "this call needs a bearer token");
          return next(request, ctx);
        }
        const caller = await options.verifier.verify(token);
        if (rule.kind === "admin" && !caller.roles.includes("admin")) {
          throw permissionDenied("ADMIN_REQUIRED", `${method.rpc} needs role admin`);
        }
        ctx.set(CALLER, caller);
        ctx.logFields.user_id = caller.userId;
        return next(request, ctx);
      };
    },
  };
}

/**
 * A call made while serving another carries that call's bearer token: the service it calls checks
 * the same caller again (order → user GetUser acts for the user placing the order).
 */
export const forwardCredentials: ClientMiddleware = {
  name: "forward-credentials",
  wrap: (_method, next) => (request, call) => {
    const token = call.options.ctx?.metadata.get(AUTHORIZATION)[0];
    if (token !== undefined && call.metadata.get(AUTHORIZATION).length === 0) {
      call.metadata.set(AUTHORIZATION, token);
    }
    return next(request, call);
  },
};

/** Every call carries `token` (unless it sets its own): for tools that act as one caller. */
export function bearer(token: string | (() => string)): ClientMiddleware {
  return {
    name: "bearer",
    wrap: (_method, next) => (request, call) => {
      if (call.metadata.get(AUTHORIZATION).length === 0) {
        call.metadata.set(AUTHORIZATION, `Bearer ${typeof token === "string" ? token : token()}`);
      }
      return next(request, call);
    },
  };
}
