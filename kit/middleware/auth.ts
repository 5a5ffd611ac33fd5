import type { ServiceError } from "../errors.js";
import {
  type AccessRule,
  bearerToken,
  CALLER,
  permissionDenied,
  type TokenVerifier,
  unauthenticated,
} from "../security/auth.js";
import { peerIdentity } from "../security/tls.js";
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
 * (kit/security/auth.ts requireOwner), where the data is read. A server stream lasts only as long as its
 * token: it ends UNAUTHENTICATED (TOKEN_EXPIRED) once a new call with that token would be refused.
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
      const streams = method.kind === "server_streaming";
      return async (request, ctx) => {
        const bearer = bearerToken(ctx.metadata.get(AUTHORIZATION));
        if (bearer === undefined) {
          if (rule.kind !== "open")
            throw unauthenticated("TOKEN_MISSING", "this call needs a bearer token");
          return next(request, ctx);
        }
        const { caller, acceptedUntil } = await options.verifier.verify(bearer.token);
        if (bearer.late) {
          throw unauthenticated("TOKEN_INVALID", "a bearer token must come first in authorization");
        }
        if (rule.kind === "admin" && !caller.roles.includes("admin")) {
          throw permissionDenied("ADMIN_REQUIRED", `${method.rpc} needs role admin`);
        }
        ctx.set(CALLER, caller);
        ctx.logFields.user_id = caller.userId;
        if (!streams) return next(request, ctx);
        const messages = (await next(request, ctx)) as AsyncIterable<unknown>;
        return endAt(messages, acceptedUntil, () =>
          unauthenticated("TOKEN_EXPIRED", "the token has expired; call again with a new one"),
        );
      };
    },
  };
}

/** Node's timers fire at once past this many ms (about 24.8 days); a longer wait is taken in steps. */
const LONGEST_TIMER_MS = 2 ** 31 - 1;

/**
 * The stream's messages until `at` (ms since the epoch), then `error()`: a message not yet sent
 * by then is not sent. The handler's iterator is returned, so it stops at its next message;
 * transport/served-calls.ts aborts the call's signal, which wakes one that waits for a change.
 */
async function* endAt(
  messages: AsyncIterable<unknown>,
  at: number,
  error: () => ServiceError,
): AsyncIterable<unknown> {
  const iterator = messages[Symbol.asyncIterator]();
  let expired: ServiceError | undefined;
  // Fails the wait for the next message; one per wait, so a long stream holds no more.
  let interrupt: ((error: ServiceError) => void) | undefined;
  let timer: NodeJS.Timeout | undefined;
  const wait = () => {
    const left = at - Date.now();
    if (left > 0) {
      timer = setTimeout(wait, Math.min(left, LONGEST_TIMER_MS));
      return;
    }
    expired = error();
    interrupt?.(expired);
  };
  wait();
  try {
    for (;;) {
      if (expired) throw expired;
      const step = await new Promise<IteratorResult<unknown>>((resolve, reject) => {
        interrupt = reject;
        iterator.next().then(resolve, reject);
      });
      interrupt = undefined;
      if (step.done) return;
      yield step.value;
    }
  } finally {
    clearTimeout(timer);
    iterator.return?.()?.catch(() => {});
  }
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
