// Plain SQL for a store's hot path: the few statements every call runs (GetUser's read, the
// order's writes, ReserveStock's transaction), with no query builder, runner or knex transaction
// around them: that machinery cost more than the database's own work. On better-sqlite3 they run
// on the pool's one connection, each prepared once; on PostgreSQL each is a named statement that
// every connection prepares once (sql-postgres.ts); on node-sqlite3 each on a statement the
// connection keeps (sql-sqlite3.ts); on any other knex through knex.raw. The SQL is the same on
// all of them, and the observers of observe.ts see every path.
// inTransaction, knex's transactions run again on PostgreSQL, lives here so all paths share it.
// Only kit/db/index.ts uses this file.
import type { Knex } from "knex";
import { isClosed } from "./closing.js";
import { atOnceOrAfterLocks, lockTaken, waitingForLocks } from "./lock-wait.js";
import {
  observedTransaction,
  observersOf,
  reportStatement,
  type TransactionInfo,
} from "./observe.js";
import { plainTransaction } from "./plain-transaction.js";
import { postgresErrors, runAgainWhen } from "./postgres.js";
import type { Binding, Sql, SqlStatements } from "./sql-api.js";
import { postgresSql } from "./sql-postgres.js";
import { sqlite3Sql } from "./sql-sqlite3.js";
import { CachingBetterSqlite3, type Connection, statementFor } from "./statement-cache.js";
import { CachingSqlite3 } from "./statement-cache-sqlite3.js";
import { markUncommitted } from "./uncommitted.js";

export type { Binding, Sql, SqlStatements };

/**
 * Runs `work` in a transaction, and runs it again (up to 4 times in all) when PostgreSQL rolled
 * it back as a serialization failure or a deadlock victim: nothing of it was kept, so a new try
 * is safe. SQLite never does this; it waits for a lock inside the statement (lock-wait.ts).
 */
export function inTransaction<T>(
  db: Knex,
  work: (trx: Knex.Transaction) => Promise<T>,
): Promise<T> {
  return runAgainWhen(postgresErrors.serialization, async () => {
    let workFailed = false;
    try {
      return await db.transaction((trx) =>
        work(trx).catch((error) => {
          workFailed = true;
          throw error;
        }),
      );
    } catch (error) {
      // knex answers with its ROLLBACK's error when that fails too (on a lost connection).
      throw workFailed ? markUncommitted(error) : error;
    }
  });
}

/** A multi-row VALUES list, e.g. "(?, ?), (?, ?)", and its bindings, row after row. */
export function valuesOf(rows: readonly (readonly Binding[])[]): {
  text: string;
  bindings: Binding[];
} {
  return {
    text: rows.map((row) => `(${row.map(() => "?").join(", ")})`).join(", "),
    bindings: rows.flat(),
  };
}

const rowsOf = <Row>(result: unknown): Row[] =>
  // node-sqlite3 gives the rows; pg a result that holds them.
  Array.isArray(result) ? result : ((result as { rows?: Row[] }).rows ?? []);

const throughKnex = (db: Knex | Knex.Transaction): SqlStatements => ({
  query: async (text, bindings = []) => rowsOf(await db.raw(text, bindings as Binding[])),
});

function knexSql(db: Knex): Sql {
  return {
    ...throughKnex(db),
    transaction: (work) => inTransaction(db, (trx) => work(throughKnex(trx))),
  };
}

/** What of knex's client this file uses. */
interface Client {
  acquireConnection(): Promise<Connection>;
  releaseConnection(connection: Connection): Promise<void>;
  /** knex's pool (tarn); gone once the database is destroyed. */
  pool?: { numUsed(): number; numPendingAcquires(): number };
}

/**
 * better-sqlite3 without knex's machinery. A transaction takes the pool's connection first, as
 * knex does, so that it never runs inside a knex transaction open on the same connection, and
 * nothing else uses the connection while it awaits. A statement on its own runs at once on the
 * connection last taken when nothing holds a connection or waits for one: it runs to its end
 * synchronously, so nothing can take the connection meanwhile, and knex's pool makes about a
 * tenth of the garbage of an order (bench --gc). Otherwise it waits its turn in the pool.
 */
function betterSqlite3Sql(db: Knex): Sql {
  const client = db.client as unknown as Client;
  let last: Connection | undefined;
  const idle = (): Connection | undefined => {
    const { pool } = client;
    if (!last?.open || !pool || pool.numUsed() > 0 || pool.numPendingAcquires() > 0) return;
    // Closed to new work: the pool refuses the statement (closing.ts).
    if (isClosed(client)) return;
    return last;
  };

  const run = <Row>(connection: Connection, text: string, bindings: readonly Binding[]): Row[] => {
    const statement = statementFor(connection, text);
    if (statement.reader) return statement.all(bindings as Binding[]) as Row[];
    statement.run(bindings as Binding[]);
    return [];
  };

  /**
   * `attempt`, its tries at a lock included, reported to the observers once, as it ends: a
   * statement that waited a second for a lock is one statement of a second, not thirty busy ones.
   */
  const observed = <T>(text: string, attempt: () => T | Promise<T>): T | Promise<T> => {
    const observers = observersOf(db);
    if (observers.length === 0) return attempt();
    const start = performance.now();
    const failed = (error: unknown): never => {
      reportStatement(observers, text, start, error);
      throw error;
    };
    let result: T | Promise<T>;
    try {
      result = attempt();
    } catch (error) {
      return failed(error);
    }
    if (!(result instanceof Promise)) {
      reportStatement(observers, text, start);
      return result;
    }
    return result.then((value) => {
      reportStatement(observers, text, start);
      return value;
    }, failed);
  };

  const withConnection = async <T>(use: (connection: Connection) => T | Promise<T>) => {
    const connection = await client.acquireConnection();
    last = connection;
    try {
      return await use(connection);
    } finally {
      await client.releaseConnection(connection);
    }
  };

  const once = <Row>(text: string, bindings: readonly Binding[]) => {
    const connection = idle();
    if (connection) return run<Row>(connection, text, bindings);
    return withConnection((taken) => run<Row>(taken, text, bindings));
  };

  return {
    query<Row>(text: string, bindings: readonly Binding[] = []): Promise<Row[]> {
      try {
        return Promise.resolve(
          observed(text, () => {
            const connection = idle();
            if (connection) {
              try {
                return run<Row>(connection, text, bindings);
              } catch (error) {
                if (!lockTaken(error)) throw error;
              }
            }
            // Another try may find the connection taken by a transaction meanwhile: once()
            // looks again.
            return waitingForLocks(() => once<Row>(text, bindings), client);
          }),
        );
      } catch (error) {
        return Promise.reject(error);
      }
    },

    transaction<T>(work: (trx: SqlStatements) => Promise<T>): Promise<T> {
      const info: TransactionInfo = { first: "" };
      const body = () =>
        withConnection((connection) =>
          plainTransaction(
            {
              begin: () => statementFor(connection, "BEGIN").run([]),
              commit: () =>
                atOnceOrAfterLocks(() => statementFor(connection, "COMMIT").run([]), client),
              rollback: () => {
                if (connection.inTransaction) statementFor(connection, "ROLLBACK").run([]);
              },
              run: (text, bindings) =>
                observed(text, () =>
                  atOnceOrAfterLocks(() => run(connection, text, bindings), client),
                ),
            },
            info,
            work,
          ),
        );
      return observedTransaction(db, info, body);
    },
  };
}

const made = new WeakMap<Knex, Sql>();

/** Plain SQL on `db`, through the fastest path its driver allows. */
export function sqlOf(db: Knex): Sql {
  let sql = made.get(db);
  if (!sql) {
    if (db.client instanceof CachingBetterSqlite3) sql = betterSqlite3Sql(db);
    else if (db.client instanceof CachingSqlite3) sql = sqlite3Sql(db);
    else if (db.client.driverName === "pg") sql = postgresSql(db);
    else sql = knexSql(db);
    made.set(db, sql);
  }
  return sql;
}
