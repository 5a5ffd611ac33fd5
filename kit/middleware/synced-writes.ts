import { type CallContext, contextKey } from "../context.js";
import type { WalSync } from "../db/wal-sync.js";
import type { ServerMiddleware } from "./types.js";

const ENOUGH_ON_DISK = contextKey<() => void>("synced-writes.enough-on-disk");

/**
 * Tells synced-writes that what this call has committed so far is all its OK answer needs on
 * disk, because whatever it commits later can be rebuilt from it after a crash (CreateOrder's
 * confirmation, from its written order and the product's committed reservation). The sync
 * starts now and runs alongside the rest of the call. An error answer still waits for a sync of
 * everything. Does nothing where no sync is made.
 */
export function enoughOnDisk(ctx: CallContext): void {
  ctx.get(ENOUGH_ON_DISK)?.();
}

/**
 * Every call of an rpc that may write (any level but NO_SIDE_EFFECTS) answers only once what it
 * committed is on disk: it waits for the WAL sync (kit/db/wal-sync.ts), whether it succeeded or
 * not, since a failed call may have written too (a FAILED order).
 */
export function syncedWrites(wal: WalSync): ServerMiddleware {
  return {
    name: "synced-writes",
    wrap: (method, next) =>
      method.idempotency === "NO_SIDE_EFFECTS" || method.kind !== "unary"
        ? next
        : (request, ctx) => {
            let early: Promise<void> | undefined;
            ctx.set(ENOUGH_ON_DISK, () => {
              early = wal.flush();
              // Awaited only by an OK answer; a failed sync is that answer's error.
              early.catch(() => {});
            });
            return (next(request, ctx) as Promise<unknown>).then(
              (reply) => (early ?? wal.flush()).then(() => reply),
              // The call's own error is the answer, whether or not the sync fails too.
              (error: unknown) =>
                wal.flush().then(
                  () => Promise.reject(error),
                  () => Promise.reject(error),
                ),
            );
          },
  };
}
