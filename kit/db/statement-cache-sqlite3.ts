// node-sqlite3 through knex, with each connection's prepared statements kept for reuse. knex's
// client runs every query with Database#all or #run, which prepare the statement, run it and
// finalize it, each a turn on libuv's thread pool; a kept statement only runs. GetProduct's read
// took about a third of the CPU (docs/performance.md). The results are the same as knex's.
import type { Knex } from "knex";
// A static import, so that the production build bundles it with the rest of knex.
import knexSqlite3 from "knex/lib/dialects/sqlite3/index.js";

/** `this` in a statement's callback: what a write changed. */
interface RunContext {
  lastID: number;
  changes: number;
}

export type Done = (this: RunContext, error: Error | null, rows?: unknown[]) => void;

export interface Statement {
  all(bindings: readonly unknown[], done: Done): void;
  run(bindings: unknown[], done: Done): void;
  finalize(done: () => void): void;
}

/** A node-sqlite3 database: one connection of knex's pool. */
export interface Connection {
  prepare(sql: string, done: (error: Error | null) => void): Statement;
  all(sql: string, bindings: readonly unknown[], done: Done): void;
}

interface QueryObject {
  sql?: string;
  bindings?: unknown[];
  method?: string;
  returning?: unknown;
  response?: unknown;
  context?: unknown;
}

/** knex's sqlite3 client, as knex exports it (untyped). */
type KnexClient = new (
  config: Knex.Config,
) => {
  _query(connection: Connection, obj: QueryObject): Promise<QueryObject>;
  destroyRawConnection(connection: Connection): Promise<void>;
};

const Sqlite3 = knexSqlite3 as KnexClient;

/**
 * Statements kept per connection, at most this many; later texts run as knex runs them. None is
 * ever evicted: a statement finalized while a query still holds it would fail that query.
 */
const MAX_STATEMENTS = 200;

const caches = new WeakMap<Connection, Map<string, Promise<Statement>>>();

/** `sql` prepared on `connection`, once; undefined when the connection keeps no more. */
export function statementFor(connection: Connection, sql: string): Promise<Statement> | undefined {
  let cache = caches.get(connection);
  if (!cache) {
    cache = new Map();
    caches.set(connection, cache);
  }
  let statement = cache.get(sql);
  if (!statement && cache.size < MAX_STATEMENTS) {
    // A statement that fails to prepare drops the calls queued on it: none is made before.
    statement = new Promise<Statement>((resolve, reject) => {
      const made = connection.prepare(sql, (error) => (error ? reject(error) : resolve(made)));
    });
    const kept = cache;
    statement.catch(() => kept.delete(sql));
    cache.set(sql, statement);
  }
  return statement;
}

/** knex's sqlite3 client with a prepared-statement cache per connection. */
export class CachingSqlite3 extends Sqlite3 {
  override async _query(connection: Connection, obj: QueryObject): Promise<QueryObject> {
    const pending = obj.sql && connection ? statementFor(connection, obj.sql) : undefined;
    if (!pending) return super._query(connection, obj);
    const statement = await pending;
    // As knex's client: writes without RETURNING run, everything else returns its rows.
    const writes = ["insert", "update"].includes(obj.method ?? "") && !obj.returning;
    const run = writes || obj.method === "del" || obj.method === "counter";
    return new Promise((resolve, reject) => {
      const done: Done = function (error, rows) {
        if (error) return reject(error);
        obj.response = rows;
        // The statement's own fields change with its next run.
        obj.context = { lastID: this.lastID, changes: this.changes };
        resolve(obj);
      };
      if (run) statement.run(obj.bindings ?? [], done);
      else statement.all(obj.bindings ?? [], done);
    });
  }

  /** SQLite refuses to close a connection with statements that are not finalized. */
  override async destroyRawConnection(connection: Connection): Promise<void> {
    const cache = caches.get(connection);
    caches.delete(connection);
    const statements = await Promise.allSettled(cache?.values() ?? []);
    await Promise.all(
      statements.map((settled) =>
        settled.status === "fulfilled"
          ? new Promise<void>((resolve) => settled.value.finalize(resolve))
          : undefined,
      ),
    );
    return super.destroyRawConnection(connection);
  }
}
