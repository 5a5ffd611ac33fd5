import { type CallContext, contextKey } from "../context.js";
import type { WalSync } from "../db/wal-sync.js";
import type { ServerMiddleware, ServerNext } from "./types.js";

const ENOUGH_ON_DISK = contextKey<() => void>("durable-answers.enough-on-disk");

/**
 * Tells durable-answers that what this call has committed so far is all its OK answer needs on
 * disk, because whatever it commits later can be rebuilt from it after a crash (CreateOrder's
 * confirmation, from its written order and the product's committed reservation). The sync
 * starts now and runs alongside the rest of the call. An error answer still waits for a sync of
 * everything. Does nothing where no sync is made.
 */
export function enoughOnDisk(ctx: CallContext): void {
  ctx.get(ENOUGH_ON_DISK)?.();
}

/** The call's own error, once `synced` is done, whether or not the sync failed too. */
const failAfter = (synced: Promise<void>, error: unknown): Promise<never> =>
  synced.then(
    () => Promise.reject(error),
    () => Promise.reject(error),
  );

/**
 * No answer tells of a commit that is not on disk. Every call of an rpc that may write (any level
 * but NO_SIDE_EFFECTS) waits for the WAL sync (kit/db/wal-sync.ts), whether it succeeded or not,
 * since a failed call may have written too (a FAILED order). A read, and each message of a
 * stream, waits only while something committed is not yet on disk: it may have read it.
 */
export function durableAnswers(wal: WalSync): ServerMiddleware {
  // Made once, not per call: a read is the cheapest call there is.
  const replied = (reply: unknown) => (wal.behind ? wal.flush().then(() => reply) : reply);
  const failed = (error: unknown) =>
    wal.behind ? failAfter(wal.flush(), error) : Promise.reject(error);
  const reads = (next: ServerNext): ServerNext =>
    function readOnDisk(request, ctx) {
      return (next(request, ctx) as Promise<unknown>).then(replied, failed);
    };
  const streams = (next: ServerNext): ServerNext =>
    async function* messagesOnDisk(request, ctx) {
      for await (const message of (await next(request, ctx)) as AsyncIterable<unknown>) {
        if (wal.behind) await wal.flush();
        yield message;
      }
    };
  const writes = (next: ServerNext): ServerNext =>
    function writeOnDisk(request, ctx) {
      let early: Promise<void> | undefined;
      ctx.set(ENOUGH_ON_DISK, () => {
        early = wal.flush();
        // Awaited only by an OK answer; a failed sync is that answer's error.
        early.catch(() => {});
      });
      return (next(request, ctx) as Promise<unknown>).then(
        (reply) => (early ?? wal.flush()).then(() => reply),
        (error: unknown) => failAfter(wal.flush(), error),
      );
    };
  return {
    name: "durable-answers",
    wrap: (method, next) =>
      method.kind === "server_streaming"
        ? streams(next)
        : method.kind !== "unary"
          ? next
          : method.idempotency === "NO_SIDE_EFFECTS"
            ? reads(next)
            : writes(next),
  };
}
