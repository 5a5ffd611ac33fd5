import type { CallContext } from "../context.js";
import { Code, ServiceError } from "../errors.js";
import type { ServerMiddleware } from "./types.js";

/** What the pages middleware reports, for a gauge, and how a shutdown ends its queue. */
export interface PagesInFlight {
  /** Paged calls being served, from their handler's start until their reply is written out. */
  readonly serving: number;
  /** Paged calls waiting for one of those to end. */
  readonly waiting: number;
  /**
   * The shutdown's grace period is over: the calls waiting their turn answer UNAVAILABLE
   * (SHUTTING_DOWN) now, as the calls still running do, before their connections are cut; so
   * does any that comes after.
   */
  shutDown(): void;
}

interface Waiting {
  admit(): void;
  refuse(error: ServiceError): void;
}

const shuttingDown = () =>
  new ServiceError(
    Code.UNAVAILABLE,
    "the service is shutting down, and this list call's turn did not come; retry",
    { reason: "SHUTTING_DOWN" },
  );

/**
 * At most `limit` calls of paged rpcs (list methods, whose reply may be PAGE_BYTES) are served
 * at once; the rest wait in arrival order. A call holds its place until its reply has been
 * handed in full to HTTP/2, not just until its handler returns: a page waits in HTTP/2's
 * buffers until the caller reads it, so a burst of list calls would otherwise hold a page each
 * in memory. A call that is cancelled or passes its deadline while it waits leaves the queue.
 * A reply the caller has not read `writeTimeoutMs` after it was sent is dropped (its stream
 * reset), so callers that never read cannot hold every place; 0: no bound. With `limit` 0 no
 * call waits, but every paged call's reply is still dropped so and recorded once written.
 */
export function pagesInFlight(limit: number, writeTimeoutMs = 0): ServerMiddleware & PagesInFlight {
  let serving = 0;
  let closed = false;
  // A Set keeps arrival order and lets a call that gives up leave from the middle.
  const queue = new Set<Waiting>();

  const release = () => {
    const [next] = queue;
    if (next) {
      queue.delete(next);
      next.admit();
    } else {
      serving--;
    }
  };

  // The caller already has its status (CANCELLED or DEADLINE_EXCEEDED); this one is for the log.
  const endedWaiting = () =>
    new ServiceError(Code.CANCELLED, "the call ended while it waited its turn");

  /**
   * Holds the call's record until its reply is written out, or dropped once unread for too long;
   * a counted call holds its place as long. Its caller may never get the status it was sent.
   */
  const hold = (ctx: CallContext, counted: boolean) => {
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
      if (counted) release();
    });
  };

  const admitted = (ctx: CallContext): Promise<void> => {
    if (closed) return Promise.reject(shuttingDown());
    if (serving < limit) {
      serving++;
      hold(ctx, true);
      return Promise.resolve();
    }
    const signal = ctx.signal;
    if (signal.aborted) return Promise.reject(endedWaiting());
    return new Promise((resolve, reject) => {
      const waiting: Waiting = {
        admit: () => {
          signal.removeEventListener("abort", giveUp);
          hold(ctx, true);
          resolve();
        },
        refuse: (error) => {
          signal.removeEventListener("abort", giveUp);
          reject(error);
        },
      };
      const giveUp = () => {
        queue.delete(waiting);
        reject(endedWaiting());
      };
      queue.add(waiting);
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
    shutDown() {
      closed = true;
      for (const waiting of queue) waiting.refuse(shuttingDown());
      queue.clear();
    },
    wrap: (method, next) => {
      if (!method.paged) return next;
      if (limit <= 0) {
        return (request, ctx) => {
          hold(ctx, false);
          return next(request, ctx);
        };
      }
      return (request, ctx) => admitted(ctx).then(() => next(request, ctx) as Promise<unknown>);
    },
  };
}
