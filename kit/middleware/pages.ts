import type { CallContext } from "../context.js";
import { Code, ServiceError } from "../errors.js";
import type { ServerMiddleware } from "./types.js";

/** What the pages middleware reports, for a gauge. */
export interface PagesInFlight {
  /** Paged calls being served, from their handler's start until their reply is written out. */
  readonly serving: number;
  /** Paged calls waiting for one of those to end. */
  readonly waiting: number;
}

/**
 * At most `limit` calls of paged rpcs (list methods, whose reply may be PAGE_BYTES) are served
 * at once; the rest wait in arrival order. A call holds its place until its reply has been
 * handed in full to HTTP/2, not just until its handler returns: a page waits in HTTP/2's
 * buffers until the caller reads it, so a burst of list calls would otherwise hold a page each
 * in memory. A call that is cancelled or passes its deadline while it waits leaves the queue.
 * A reply the caller has not read `writeTimeoutMs` after it was sent is dropped (its stream
 * reset), so callers that never read cannot hold every place; 0: no bound.
 */
export function pagesInFlight(limit: number, writeTimeoutMs = 0): ServerMiddleware & PagesInFlight {
  let serving = 0;
  // A Set keeps arrival order and lets a call that gives up leave from the middle.
  const queue = new Set<() => void>();

  const release = () => {
    const [next] = queue;
    if (next) {
      queue.delete(next);
      next();
    } else {
      serving--;
    }
  };

  // The caller already has its status (CANCELLED or DEADLINE_EXCEEDED); this one is for the log.
  const endedWaiting = () =>
    new ServiceError(Code.CANCELLED, "the call ended while it waited its turn");

  /**
   * Holds a place until the reply is written out, or dropped once unread for too long. The
   * call's record waits as long: its caller may never get the status it was sent.
   */
  const hold = (ctx: CallContext) => {
    let written = false;
    let timer: NodeJS.Timeout | undefined;
    ctx.holdRecord();
    if (writeTimeoutMs > 0) {
      ctx.onSent(() => {
        if (!written) timer = setTimeout(() => ctx.dropReply(), writeTimeoutMs).unref();
      });
    }
    ctx.onWritten(() => {
      written = true;
      clearTimeout(timer);
      release();
    });
  };

  const admitted = (ctx: CallContext): Promise<void> => {
    if (serving < limit) {
      serving++;
      hold(ctx);
      return Promise.resolve();
    }
    const signal = ctx.signal;
    if (signal.aborted) return Promise.reject(endedWaiting());
    return new Promise((resolve, reject) => {
      const admit = () => {
        signal.removeEventListener("abort", giveUp);
        hold(ctx);
        resolve();
      };
      const giveUp = () => {
        queue.delete(admit);
        reject(endedWaiting());
      };
      queue.add(admit);
      signal.addEventListener("abort", giveUp, { once: true });
    });
  };

  return {
    name: "pages-in-flight",
    get serving() {
      return serving;
    },
    get waiting() {
      return queue.size;
    },
    wrap: (method, next) =>
      method.paged && limit > 0
        ? (request, ctx) => admitted(ctx).then(() => next(request, ctx) as Promise<unknown>)
        : next,
  };
}
