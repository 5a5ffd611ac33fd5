// better-sqlite3 runs each statement on the calling thread, so SQLite's own wait for another
// connection's lock (busy_timeout) held up the whole process: every call, health check and
// timer, for as long as the lock was held (up to 5 s). Its connections wait 0 ms instead, and a
// statement that meets a lock runs again after short sleeps, with the event loop free meanwhile.
// node-sqlite3 waits on a worker thread and keeps busy_timeout. Only kit/db uses this file.
import { DatabaseClosed, isClosed, pauseUnlessClosed } from "./closing.js";

/** How long a statement waits for a lock in all, as busy_timeout did. */
export const LOCK_WAIT_MS = 5_000;

/** The longest sleep between two tries. */
const MAX_PAUSE_MS = 50;

/**
 * SQLite could not take a lock another connection holds, and the statement did nothing. Not
 * SQLITE_BUSY_SNAPSHOT: a transaction that read a state another has since changed must start
 * again, not wait.
 */
export function lockTaken(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  return code === "SQLITE_BUSY" || code === "SQLITE_BUSY_RECOVERY";
}

/**
 * `attempt()`, tried again while it meets a lock, for LOCK_WAIT_MS at most, and only while its
 * database is open to new work (closing.ts): `client` is the knex client it runs on.
 */
export async function waitingForLocks<T>(
  attempt: () => T | Promise<T>,
  client: object,
): Promise<T> {
  let started: number | undefined;
  for (let pause = 1; ; pause = Math.min(2 * pause, MAX_PAUSE_MS)) {
    try {
      return await attempt();
    } catch (error) {
      if (!lockTaken(error)) throw error;
      started ??= performance.now();
      if (performance.now() - started + pause > LOCK_WAIT_MS) throw error;
    }
    await pauseUnlessClosed(client, pause);
    if (isClosed(client)) throw new DatabaseClosed();
  }
}

/**
 * `attempt()` now, and only if it meets a lock, again as waitingForLocks does: a statement that
 * finds no lock costs no promise more than before.
 */
export function atOnceOrAfterLocks<T>(attempt: () => T, client: object): T | Promise<T> {
  try {
    return attempt();
  } catch (error) {
    if (!lockTaken(error)) throw error;
    return waitingForLocks(attempt, client);
  }
}
