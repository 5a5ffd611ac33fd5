import { idempotencyKeyOf } from "../contract.js";
import { Code, clipText } from "../errors.js";
import type { Logger } from "../observability/logger.js";
import type { ServerMiddleware } from "./types.js";
import { X_REQUEST_ID_MAX_LENGTH } from "./x-request-id.js";

/** Codes that mean a bug or an outage on our side rather than a caller's mistake. */
const OUR_FAULT = new Set<Code>([Code.UNKNOWN, Code.INTERNAL, Code.DATA_LOSS]);

/** Set by a gRPC client on each attempt after a call's first: a retry or a hedge. */
const PREVIOUS_ATTEMPTS = "grpc-previous-rpc-attempts";
/** Set by Envoy on every attempt, the first one too (1). */
const ENVOY_ATTEMPT = "x-envoy-attempt-count";

/**
 * One log line per call, written once the status is sent, with the status the caller got (after
 * serialization and cancellation), how long it took, the deadline it arrived with, the
 * idempotency key of a request that has one, which attempt of its caller's call it is when not
 * the first, and the call's log fields (`x_request_id`, …).
 * Our own failures are logged at error level with their cause; another failure with a cause
 * underneath (a database lost or full) at warn level with it.
 */
export function logging(logger: Logger): ServerMiddleware {
  return {
    name: "logging",
    wrap(method, next) {
      return (request, ctx) => {
        const key = idempotencyKeyOf(method, request);
        ctx.onFinish((status) => {
          const level = OUR_FAULT.has(status.code)
            ? "error"
            : status.cause !== undefined
              ? "warn"
              : "info";
          if (!logger.isLevelEnabled(level)) return;
          const line: Record<string, unknown> = {
            method: method.path,
            code: Code[status.code],
            ...(status.reason && { reason: status.reason }),
            duration_ms: Math.round(status.durationMs * 1000) / 1000,
            ...ctx.logFields,
          };
          // The time the caller allowed, as it arrived: shows deadlines propagating.
          if (ctx.deadline) line.deadline = ctx.deadline.toISOString();
          // Logged before validation refuses a long one: clipped, as x-request-id is.
          if (key !== undefined) {
            line.idempotency_key =
              key.length > X_REQUEST_ID_MAX_LENGTH ? clipText(key, X_REQUEST_ID_MAX_LENGTH) : key;
          }
          const previous = Number(ctx.metadata.get(PREVIOUS_ATTEMPTS)[0]);
          const attempt = previous > 0 ? previous + 1 : Number(ctx.metadata.get(ENVOY_ATTEMPT)[0]);
          if (attempt > 1) line.attempt = attempt;
          if (level === "info") logger.info(line, "rpc");
          else logger[level]({ ...line, err: status.cause, details: status.details }, "rpc failed");
        });
        return next(request, ctx);
      };
    },
  };
}
