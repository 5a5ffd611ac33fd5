// A transaction whose work failed never sent its COMMIT, and PostgreSQL keeps nothing of a
// transaction a session leaves open: so a connection lost under it, or a session the server
// ended, lost nothing. Only a loss while a write commits leaves its outcome unknown. The
// transaction runners (sql.ts, plain-transaction.ts) mark what their work threw; the status
// mapping reads it through index.ts. Only kit/db uses this file.

const uncommitted = new WeakSet<object>();

/** Notes that `error` ended a transaction before its COMMIT was sent, and returns it. */
export function markUncommitted<E>(error: E): E {
  if (typeof error === "object" && error !== null) uncommitted.add(error);
  return error;
}

/** True when the error ended a transaction before it committed: nothing of it was kept. */
export const isUncommitted = (error: unknown): boolean =>
  typeof error === "object" && error !== null && uncommitted.has(error);
