// A shutdown's grace period ends by cutting the calls still running, and their callers learn
// nothing of what those calls then do. So at that moment the service's database closes to new
// work: a statement not yet begun, or still waiting for a connection or for SQLite's lock, fails
// instead of writing after its caller was cut off, and its call answers before the cut
// (kit/middleware/status.ts: UNAVAILABLE, SHUTTING_DOWN). A transaction that holds its
// connection already runs to its end. Only kit/db uses this file.
import type { Knex } from "knex";

/** What of knex's client this file uses. */
interface Pooled {
  /** knex's settings: the one object a client shares with the clients of its transactions. */
  config: object;
  acquireConnection(): Promise<unknown>;
  releaseConnection(connection: unknown): Promise<unknown>;
  /** knex's pool (tarn); gone once the database is destroyed. */
  pool?: { numFree(): number };
}

const closed = new WeakSet<object>();

/**
 * What waits on each database: its pool's acquires not answered yet, and statements sleeping
 * between two tries at SQLite's lock. Each is woken, to be refused, the moment it closes.
 */
const waiting = new WeakMap<object, Set<() => void>>();

/** A statement refused because its database closed to new work. */
export class DatabaseClosed extends Error {
  constructor() {
    super("the database takes no new work: the service is shutting down");
    this.name = "DatabaseClosed";
  }
}

/**
 * No connection could be had for a statement (none made in time, one refused or closed as it
 * was made, the pool's wait over): nothing of the statement reached the database.
 */
export class NoConnection extends Error {
  constructor(cause: unknown) {
    super(String((cause as Error | undefined)?.message ?? cause), { cause });
    this.name = "NoConnection";
  }
}

const noConnection = (error: unknown) =>
  error instanceof DatabaseClosed ? error : new NoConnection(error);

/** Whether the database of `client`, or of the transaction it runs, is closed to new work. */
export const isClosed = (client: object): boolean => closed.has((client as Pooled).config);

/** `db`, its connections refused once closeToNewWork(db) is called, those waiting too. */
export function closable(db: Knex): Knex {
  const client = db.client as unknown as Pooled;
  const acquire = client.acquireConnection.bind(client);
  const pending = new Set<() => void>();
  waiting.set(client.config, pending);
  client.acquireConnection = () => {
    if (isClosed(client)) return Promise.reject(new DatabaseClosed());
    // A free connection is handed over without a turn of the event loop, in which nothing can
    // close the database: only a call that must wait is kept track of.
    if ((client.pool?.numFree() ?? 0) > 0) {
      return acquire().catch((error: unknown) => Promise.reject(noConnection(error)));
    }
    return new Promise((resolve, reject) => {
      let answered = false;
      const refuse = () => {
        answered = true;
        reject(new DatabaseClosed());
      };
      pending.add(refuse);
      acquire()
        .then(
          (connection) => {
            pending.delete(refuse);
            // Refused meanwhile: the connection goes back unused.
            if (answered) return client.releaseConnection(connection);
            if (!isClosed(client)) return resolve(connection);
            refuse();
            return client.releaseConnection(connection);
          },
          (error: unknown) => {
            pending.delete(refuse);
            if (!answered) reject(noConnection(error));
          },
        )
        // A connection that cannot go back is the pool's to drop; nobody waits on this.
        .catch(() => {});
    });
  };
  return db;
}

/**
 * Resolves after `ms`, or as soon as the database of `client` closes to new work: a statement
 * waiting for a lock is refused then, and its call answers before the grace period's cut.
 */
export function pauseUnlessClosed(client: object, ms: number): Promise<void> {
  if (isClosed(client)) return Promise.resolve();
  const pending = waiting.get((client as Pooled).config);
  return new Promise((resolve) => {
    const wake = () => {
      clearTimeout(timer);
      pending?.delete(wake);
      resolve();
    };
    const timer = setTimeout(wake, ms);
    pending?.add(wake);
  });
}

/** From now on `db` begins no statement outside the transactions already under way. */
export function closeToNewWork(db: Knex): void {
  const { config } = db.client as unknown as Pooled;
  closed.add(config);
  const pending = waiting.get(config);
  for (const wake of pending ?? []) wake();
  pending?.clear();
}
