// Plain SQL on PostgreSQL: each statement a named one, which every connection of knex's pool
// parses and plans once and then only binds and runs. knex.raw sends every statement unnamed,
// so the server parses and plans it again each time, and knex's runner wraps each in its own
// bookkeeping: per GetProduct's read, about half of the server's work and a third of the
// service's (docs/performance.md). Only sql.ts uses this file.
import type { Knex } from "knex";
import { observedTransaction, observersOf, reportStatement } from "./observe.js";
import { plainTransaction } from "./plain-transaction.js";
import { namesStatements, postgresErrors, runAgainWhen } from "./postgres.js";
import type { Binding, Sql, SqlStatements } from "./sql.js";

/** A connection of knex's `pg` pool: a pg Client. */
interface Connection {
  query(
    config: string | { name?: string; text: string; values?: readonly Binding[] },
  ): Promise<{ rows: unknown[] }>;
}

/** What of knex's client this file uses. */
interface Client {
  acquireConnection(): Promise<Connection>;
  releaseConnection(connection: Connection): Promise<void>;
}

/**
 * Texts named at most, per process. The services run a few dozen; a multi-row VALUES list makes
 * one per row count. A text past this runs unnamed, as knex would run it.
 */
const MAX_NAMED = 500;

/** Each text's number (part of its statement's name) and its SQL in PostgreSQL's `$n` form. */
const texts = new Map<string, { id: number; text: string }>();

/** `sql` with its `?` placeholders numbered `$1, $2, …`; a `?` inside quotes is left alone. */
export function numbered(sql: string): string {
  let n = 0;
  let quote: string | undefined;
  let out = "";
  for (const char of sql) {
    if (quote) {
      if (char === quote) quote = undefined;
    } else if (char === "'" || char === '"') {
      quote = char;
    } else if (char === "?") {
      out += `$${++n}`;
      continue;
    }
    out += char;
  }
  return out;
}

/**
 * The query pg sends for `sql`, with its bindings: named `shop_<generation>_<text>` while there
 * is room, unless `named` is off.
 */
function queryOf(sql: string, values: readonly Binding[], named: boolean, generation: number) {
  let known = texts.get(sql);
  if (!known) {
    known = { id: texts.size, text: numbered(sql) };
    if (texts.size >= MAX_NAMED) return { text: known.text, values };
    texts.set(sql, known);
  }
  if (!named) return { text: known.text, values };
  return { name: `shop_${generation}_${known.id}`, text: known.text, values };
}

/** Plain SQL on a `pg` knex: named statements on the pool's connections, unless turned off. */
export function postgresSql(db: Knex): Sql {
  const client = db.client as unknown as Client;
  const named = namesStatements(db);
  // A statement whose table changed under it (stalePlan) fails on every run until prepared
  // again: a new generation prepares every text again, under new names, on every connection.
  let generation = 0;

  const run = async <Row>(connection: Connection, sql: string, bindings: readonly Binding[]) => {
    const observers = observersOf(db);
    const start = observers.length > 0 ? performance.now() : 0;
    try {
      const { rows } = await connection.query(queryOf(sql, bindings, named, generation));
      if (observers.length > 0) reportStatement(observers, sql, start);
      return rows as Row[];
    } catch (error) {
      if (observers.length > 0) reportStatement(observers, sql, start, error);
      if (postgresErrors.stalePlan(error)) generation++;
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
    query: <Row>(sql: string, bindings: readonly Binding[] = []) =>
      // A stale statement ran nothing: once prepared again, it runs.
      runAgainWhen(postgresErrors.stalePlan, () =>
        withConnection((connection) => run<Row>(connection, sql, bindings)),
      ),

    transaction<T>(work: (trx: SqlStatements) => Promise<T>): Promise<T> {
      const once = () => {
        const info = { first: "" };
        const body = () =>
          withConnection((connection) =>
            plainTransaction(
              {
                begin: () => connection.query("BEGIN"),
                commit: () => connection.query("COMMIT"),
                // A connection that broke is dropped by knex's pool; the server rolled it back.
                rollback: () => connection.query("ROLLBACK").catch(() => {}),
                run: (sql, bindings) => run(connection, sql, bindings),
              },
              info,
              work,
            ),
          );
        return observedTransaction(db, info, body);
      };
      // As inTransaction: a transaction the server rolled back to keep transactions apart, or
      // one that met a stale statement, kept nothing and runs again.
      return runAgainWhen(
        (error) => postgresErrors.serialization(error) || postgresErrors.stalePlan(error),
        once,
      );
    },
  };
}
