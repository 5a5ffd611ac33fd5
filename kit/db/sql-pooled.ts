// sqlOf on a driver whose statements answer later (PostgreSQL, node-sqlite3): each statement on
// a connection of knex's pool, held for it or for the whole transaction, without knex's runner or
// transaction around it. Each engine says how a statement runs; the observers of observe.ts see
// every statement and transaction. Only the sql files use this one.
import type { Knex } from "knex";
import { observedTransaction, observersOf, reportStatement } from "./observe.js";
import { plainTransaction } from "./plain-transaction.js";
import { runAgainWhen } from "./postgres.js";
import type { Binding, Sql, SqlStatements } from "./sql-api.js";

/** How one driver runs statements on a connection of its pool. */
export interface PooledEngine<Connection> {
  run(connection: Connection, text: string, bindings: readonly Binding[]): Promise<unknown[]>;
  /** Ends a transaction whose work threw; the pool drops a connection that broke. */
  rollback(connection: Connection): Promise<unknown>;
  /** A failed statement that ran nothing and may run again on its own. */
  againAlone?(error: unknown): boolean;
  /** A failed transaction that kept nothing and may run again. */
  againWhole?(error: unknown): boolean;
}

/** What of knex's client this file uses. */
interface Client<Connection> {
  acquireConnection(): Promise<Connection>;
  releaseConnection(connection: Connection): Promise<void>;
}

const never = () => false;

/** Plain SQL on `db`'s pool, through `engine`. */
export function pooledSql<Connection>(db: Knex, engine: PooledEngine<Connection>): Sql {
  const client = db.client as unknown as Client<Connection>;

  const run = async <Row>(connection: Connection, text: string, bindings: readonly Binding[]) => {
    const observers = observersOf(db);
    const start = observers.length > 0 ? performance.now() : 0;
    try {
      const rows = await engine.run(connection, text, bindings);
      if (observers.length > 0) reportStatement(observers, text, start);
      return rows as Row[];
    } catch (error) {
      if (observers.length > 0) reportStatement(observers, text, start, error);
      throw error;
    }
  };

  const withConnection = async <T>(use: (connection: Connection) => Promise<T>) => {
    const connection = await client.acquireConnection();
    try {
      return await use(connection);
    } finally {
      await client.releaseConnection(connection);
    }
  };

  return {
    query: <Row>(text: string, bindings: readonly Binding[] = []) =>
      runAgainWhen(engine.againAlone ?? never, () =>
        withConnection((connection) => run<Row>(connection, text, bindings)),
      ),

    transaction<T>(work: (trx: SqlStatements) => Promise<T>): Promise<T> {
      const once = () => {
        const info = { first: "" };
        const body = () =>
          withConnection((connection) =>
            plainTransaction(
              {
                begin: () => engine.run(connection, "BEGIN", []),
                commit: () => engine.run(connection, "COMMIT", []),
                rollback: () => engine.rollback(connection),
                run: (text, bindings) => run(connection, text, bindings),
              },
              info,
              work,
            ),
          );
        return observedTransaction(db, info, body);
      };
      return runAgainWhen(engine.againWhole ?? never, once);
    },
  };
}
