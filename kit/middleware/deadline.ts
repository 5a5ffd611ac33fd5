import { Code, ServiceError } from "../errors.js";
import type { ClientMiddleware, ServerMiddleware } from "./types.js";

/** A call whose deadline passed before it started is refused before its handler runs. */
export const deadlineServer: ServerMiddleware = {
  name: "deadline",
  wrap: (_method, next) => (request, ctx) => {
    if (ctx.deadline !== undefined && ctx.deadline.getTime() <= Date.now()) {
      return Promise.reject(
        new ServiceError(Code.DEADLINE_EXCEEDED, "the deadline passed before the call started"),
      );
    }
    return next(request, ctx);
  },
};

/**
 * Gives each outgoing call its deadline: the call's own `timeoutMs`, or the client's default,
 * but never later than the deadline of the call it serves (`ctx`). It is cancelled with that
 * call, and with the caller's own `signal`.
 */
export function deadlineClient(defaultTimeoutMs: number): ClientMiddleware {
  return {
    name: "deadline",
    wrap: (_method, next) => (request, call) => {
      const { ctx, timeoutMs, signal } = call.options;
      let deadline = Date.now() + (timeoutMs ?? defaultTimeoutMs);
      const inherited = ctx?.deadline?.getTime();
      if (inherited !== undefined && inherited < deadline) deadline = inherited;
      if (call.deadline === undefined || deadline < call.deadline) call.deadline = deadline;
      if (ctx) call.signals.push(ctx.signal);
      if (signal) call.signals.push(signal);
      return next(request, call);
    },
  };
}

/** Cancels every outgoing call once `signal` aborts, whatever call it serves. */
export function cancelledWith(signal: AbortSignal): ClientMiddleware {
  return {
    name: "cancelled-with",
    wrap: (_method, next) => (request, call) => {
      call.signals.push(signal);
      return next(request, call);
    },
  };
}
