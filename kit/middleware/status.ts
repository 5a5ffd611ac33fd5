import type { CallContext } from "../context.js";
import { idempotencyKeyOf, type MethodInfo, retriable } from "../contract.js";
import { isBusy, isClosedToNewWork, isConnectionLost, isFull, isUncommitted } from "../db/index.js";
import { Code, ServiceError } from "../errors.js";
import type { ServerMiddleware } from "./types.js";

/**
 * Turns anything a handler throws into a ServiceError with the right code: a cancelled call is
 * CANCELLED; a database closed to new work as a shutdown's grace period ended is UNAVAILABLE
 * (SHUTTING_DOWN); a database that could not take a statement and kept nothing of it (busy or timed
 * out, refused, no free connection: kit/db/index.ts isBusy) is UNAVAILABLE, so the caller may retry;
 * one whose connection was lost under it is UNAVAILABLE too when that ended a transaction before
 * it committed (isUncommitted) or when `repeatable` says a repeat cannot do the call twice, and
 * otherwise, since a write cut as it committed may have been kept, ABORTED (OUTCOME_UNKNOWN);
 * one with no room left for a write (a full disk) is RESOURCE_EXHAUSTED, as gRPC's own
 * code list has it; anything else is our own bug: INTERNAL. The database's error is kept as the
 * cause, for the log.
 */
export function toServiceError(error: unknown, ctx: CallContext, repeatable = true): ServiceError {
  if (error instanceof ServiceError) return error;
  if (ctx.signal.aborted) {
    return new ServiceError(Code.CANCELLED, "the call was cancelled or its deadline passed");
  }
  if (isClosedToNewWork(error)) {
    return new ServiceError(
      Code.UNAVAILABLE,
      "the service is shutting down, and its database took no more of this call; retry",
      { reason: "SHUTTING_DOWN" },
    );
  }
  if (isBusy(error)) {
    return new ServiceError(Code.UNAVAILABLE, "the database is busy; retry", {
      reason: "DATABASE_BUSY",
    });
  }
  if (isConnectionLost(error)) {
    return repeatable || isUncommitted(error)
      ? new ServiceError(
          Code.UNAVAILABLE,
          "the connection to the database was lost; retry",
          { reason: "DATABASE_UNAVAILABLE" },
          error,
        )
      : new ServiceError(
          Code.ABORTED,
          "the connection to the database was lost before it confirmed the write, which may have been kept: read it back before you repeat the call",
          { reason: "OUTCOME_UNKNOWN" },
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

async function* mapped(messages: AsyncIterable<unknown>, ctx: CallContext, repeatable: boolean) {
  try {
    yield* messages;
  } catch (error) {
    throw toServiceError(error, ctx, repeatable);
  }
}

/**
 * True when a repeat of this call cannot do anything twice: the rpc's idempotency level says
 * so, or the caller gave its request_id.
 */
const repeatableCall = (method: MethodInfo, request: unknown) =>
  retriable(method) || idempotencyKeyOf(method, request) !== undefined;

/** Status mapping as middleware: every failure leaves the chain as a ServiceError. */
export const statusMapping: ServerMiddleware = {
  name: "status-mapping",
  wrap: (method, next) =>
    method.kind === "unary"
      ? (request, ctx) => {
          try {
            return (next(request, ctx) as Promise<unknown>).then(undefined, (error: unknown) => {
              throw toServiceError(error, ctx, repeatableCall(method, request));
            });
          } catch (error) {
            return Promise.reject(toServiceError(error, ctx, repeatableCall(method, request)));
          }
        }
      : async (request, ctx) => {
          const repeatable = repeatableCall(method, request);
          try {
            return mapped((await next(request, ctx)) as AsyncIterable<unknown>, ctx, repeatable);
          } catch (error) {
            throw toServiceError(error, ctx, repeatable);
          }
        },
};
