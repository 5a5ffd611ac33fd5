import type { CallContext } from "../context.js";
import { isBusy, isConnectionLost, isFull } from "../db.js";
import { Code, ServiceError } from "../errors.js";
import type { ServerMiddleware } from "./types.js";

/**
 * Turns anything a handler throws into a ServiceError with the right code: a cancelled call is
 * CANCELLED; a database that could not take a statement and kept nothing of it (busy or timed
 * out, refused, no free connection: kit/db.ts isBusy), or whose connection was lost under it, is
 * UNAVAILABLE, so the caller may retry; one with no room left for a write (a full disk) is
 * RESOURCE_EXHAUSTED, as gRPC's own code list has it; anything else is our own bug: INTERNAL.
 * The database's error is kept as the cause, for the log.
 */
export function toServiceError(error: unknown, ctx: CallContext): ServiceError {
  if (error instanceof ServiceError) return error;
  if (ctx.signal.aborted) {
    return new ServiceError(Code.CANCELLED, "the call was cancelled or its deadline passed");
  }
  if (isBusy(error)) {
    return new ServiceError(Code.UNAVAILABLE, "the database is busy; retry", {
      reason: "DATABASE_BUSY",
    });
  }
  if (isConnectionLost(error)) {
    return new ServiceError(
      Code.UNAVAILABLE,
      "the connection to the database was lost; retry",
      { reason: "DATABASE_UNAVAILABLE" },
      error,
    );
  }
  if (isFull(error)) {
    return new ServiceError(
      Code.RESOURCE_EXHAUSTED,
      "the database has no room for the write; nothing was written",
      { reason: "DATABASE_FULL" },
      error,
    );
  }
  return new ServiceError(Code.INTERNAL, "internal error", { reason: "INTERNAL" }, error);
}

async function* mapped(messages: AsyncIterable<unknown>, ctx: CallContext) {
  try {
    yield* messages;
  } catch (error) {
    throw toServiceError(error, ctx);
  }
}

/** Status mapping as middleware: every failure leaves the chain as a ServiceError. */
export const statusMapping: ServerMiddleware = {
  name: "status-mapping",
  wrap: (method, next) =>
    method.kind === "unary"
      ? (request, ctx) => {
          try {
            return (next(request, ctx) as Promise<unknown>).then(undefined, (error: unknown) => {
              throw toServiceError(error, ctx);
            });
          } catch (error) {
            return Promise.reject(toServiceError(error, ctx));
          }
        }
      : async (request, ctx) => {
          try {
            return mapped((await next(request, ctx)) as AsyncIterable<unknown>, ctx);
          } catch (error) {
            throw toServiceError(error, ctx);
          }
        },
};
