// better-sqlite3 through knex, with each connection's prepared statements kept for reuse. knex's
// own client prepares every statement again on every query; the hot queries of a service are a
// handful of SQL texts, so preparing each once per connection saves that work on every call
// (GetProduct, ReserveStock, the order's writes). Two things differ from knex's client: the
// statement cache, and LIMIT written into the SQL as a number rather than bound (see
// queryCompiler). The results are the same.
import type { Knex } from "knex";
// A static import, so that the production build bundles it with the rest of knex.
import knexBetterSqlite3 from "knex/lib/dialects/better-sqlite3/index.js";
import { atOnceOrAfterLocks, waitingForLocks } from "./lock-wait.js";

interface Statement {
  reader: boolean;
  all(bindings: unknown[]): unknown[];
  run(bindings: unknown[]): { changes: number; lastInsertRowid: number | bigint };
}

/** A better-sqlite3 database: one connection of knex's pool. */
export interface Connection {
  prepare(sql: string): Statement;
  /** True while a transaction is open on it. */
  readonly inTransaction: boolean;
  /** False once it is closed (the pool replaced it, or the database was destroyed). */
  readonly open: boolean;
}

interface QueryObject {
  sql?: string;
  bindings?: unknown[];
  options?: unknown;
  response?: unknown;
  context?: { lastID: number | bigint; changes: number };
}

/** knex's better-sqlite3 client, as knex exports it (untyped). */
type KnexClient = new (
  config: Knex.Config,
) => {
  queryCompiler(builder: QueryBuilderState, formatter: unknown): unknown;
  _query(connection: Connection, obj: QueryObject): Promise<QueryObject>;
  _formatBindings(bindings: unknown[] | undefined): unknown[];
  _optSafeIntegers(options: unknown): boolean | undefined;
};

/** What queryCompiler reads of a query builder (knex's internals, untyped). */
interface QueryBuilderState {
  _single: { limit?: number; skipBinding?: Record<string, boolean | undefined> };
}

const BetterSqlite3 = knexBetterSqlite3 as KnexClient;

/**
 * Statements kept per connection, at most this many: the services run a few dozen distinct SQL
 * texts, but a query with a list (whereIn) makes one text per list length.
 */
const MAX_STATEMENTS = 200;

const caches = new WeakMap<Connection, Map<string, Statement>>();

/** `sql` prepared on `connection`, once while it stays among the most recently used. */
export function statementFor(connection: Connection, sql: string): Statement {
  let cache = caches.get(connection);
  if (!cache) {
    cache = new Map();
    caches.set(connection, cache);
  }
  let statement = cache.get(sql);
  if (statement) {
    // Most recently used last: the first entry is the one to evict.
    cache.delete(sql);
  } else {
    statement = connection.prepare(sql);
    if (cache.size >= MAX_STATEMENTS) cache.delete(cache.keys().next().value as string);
  }
  cache.set(sql, statement);
  return statement;
}

/** knex's better-sqlite3 client with a prepared-statement cache per connection. */
export class CachingBetterSqlite3 extends BetterSqlite3 {
  /**
   * SQLite prepares a statement whose LIMIT is a bound parameter again on every run, which
   * undoes the cache for every `.first()` and page (GetProduct, GetUser): knex's LIMIT, always
   * an integer (it parses it), goes into the SQL text instead, one statement per limit.
   */
  override queryCompiler(builder: QueryBuilderState, formatter: unknown) {
    const single = builder._single;
    if (single.limit !== undefined) single.skipBinding = { ...single.skipBinding, limit: true };
    return super.queryCompiler(builder, formatter);
  }

  override _query(connection: Connection, obj: QueryObject): Promise<QueryObject> {
    // A query that sets safeIntegers changes its statement: knex's own path prepares it afresh.
    if (!obj.sql || !connection || this._optSafeIntegers(obj.options) !== undefined) {
      return waitingForLocks(() => super._query(connection, obj), this);
    }
    try {
      const statement = statementFor(connection, obj.sql);
      const bindings = this._formatBindings(obj.bindings);
      const execute = () => {
        if (statement.reader) {
          obj.response = statement.all(bindings);
          return obj;
        }
        const response = statement.run(bindings);
        obj.response = response;
        obj.context = { lastID: response.lastInsertRowid, changes: response.changes };
        return obj;
      };
      return Promise.resolve(atOnceOrAfterLocks(execute, this));
    } catch (error) {
      return Promise.reject(error);
    }
  }
}
