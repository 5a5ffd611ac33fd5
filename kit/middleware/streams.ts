import { Code, ServiceError } from "../errors.js";
import { CALLER } from "../security/auth.js";
import type { ServerMiddleware, ServerNext } from "./types.js";

/**
 * At most `limit` server streams open at once per signed-in caller in this process; 0: no
 * bound. A stream can last as long as what it watches (a WatchOrder, until its order is
 * final), and each one adds to what every poll of the database reads, so one caller could otherwise hold any number. A
 * call past the bound is RESOURCE_EXHAUSTED (TOO_MANY_STREAMS) with a QuotaFailure, and the
 * caller's open streams go on. Calls without a token (mesh identities) are not counted.
 */
export function streamsPerCaller(limit: number): ServerMiddleware {
  const open = new Map<string, number>();

  const counted = (userId: string, next: ServerNext): ServerNext => {
    return (request, ctx) => {
      const held = open.get(userId) ?? 0;
      if (held >= limit) return Promise.reject(tooMany(userId, limit));
      open.set(userId, held + 1);
      let released = false;
      const release = () => {
        if (released) return;
        released = true;
        const left = (open.get(userId) ?? 1) - 1;
        if (left > 0) open.set(userId, left);
        else open.delete(userId);
      };
      // A stream its caller left ends here even if its handler is still waiting for a change.
      ctx.signal.addEventListener("abort", release, { once: true });
      return (async function* () {
        try {
          yield* (await next(request, ctx)) as AsyncIterable<unknown>;
        } finally {
          ctx.signal.removeEventListener("abort", release);
          release();
        }
      })();
    };
  };

  return {
    name: "streams-per-caller",
    wrap: (method, next) =>
      method.kind !== "server_streaming" || limit <= 0
        ? next
        : (request, ctx) => {
            const caller = ctx.get(CALLER);
            return caller ? counted(caller.userId, next)(request, ctx) : next(request, ctx);
          },
  };
}

const tooMany = (userId: string, limit: number) =>
  new ServiceError(
    Code.RESOURCE_EXHAUSTED,
    `this caller already has ${limit} streams open here; end one before opening another`,
    {
      reason: "TOO_MANY_STREAMS",
      metadata: { limit: String(limit) },
      quotaViolations: [
        {
          subject: `user:${userId}`,
          description: `at most ${limit} server streams open at once per caller (SHOP_MAX_STREAMS_PER_CALLER)`,
        },
      ],
    },
  );
