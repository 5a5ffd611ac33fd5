import type { WalSync } from "../db/wal-sync.js";
import type { ServerMiddleware } from "./types.js";

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
        : (request, ctx) =>
            (next(request, ctx) as Promise<unknown>).then(
              (reply) => wal.flush().then(() => reply),
              // The call's own error is the answer, whether or not the sync fails too.
              (error: unknown) =>
                wal.flush().then(
                  () => Promise.reject(error),
                  () => Promise.reject(error),
                ),
            ),
  };
}
