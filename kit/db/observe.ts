// Watching a database's work, for metrics and traces, through knex's query events and its
// transaction method: the same on every engine and driver. The plain SQL of sql.ts, which
// bypasses knex, calls the same observers through reportStatement and observedTransaction. Only
// kit/db/index.ts and the sql files use this file.
import type { Knex } from "knex";

/** One statement as an observer sees it once it is done. */
export interface Statement {
  /** The SQL verb, lower-case: select, insert, update, delete, … */
  operation: string;
  /** The table it names first (after FROM, INTO or UPDATE); "" when none. */
  table: string;
  seconds: number;
  /** Set when the statement failed. */
  error?: unknown;
}

/** What a transaction did: filled in as its statements run. */
export interface TransactionInfo {
  /** Its first statement, as "<operation> <table>", e.g. "insert reservations"; "" until then. */
  first: string;
}

/**
 * Watches a database's work, for metrics and traces: every statement once it is done, and every
 * transaction (`run` is the transaction; a wrapper may time it, or run it inside a span). Works
 * through knex's query events and its transaction method, so it is the same for every engine.
 */
export interface DatabaseObserver {
  statement?(done: Statement): void;
  transaction?<T>(run: () => Promise<T>, info: TransactionInfo): Promise<T>;
}

const VERB = /^\s*(\w+)/;
const TABLE = /\b(?:from|into|update)\s+[`"[]?([\w.]+)/i;

/** Descriptions of the SQL texts seen lately: a service runs a few dozen, again and again. */
const described = new Map<string, Readonly<{ operation: string; table: string }>>();
const MAX_DESCRIBED = 500;

/** The verb and first table of a SQL statement. */
export function describeStatement(sql: string): Readonly<{ operation: string; table: string }> {
  let description = described.get(sql);
  if (!description) {
    description = {
      operation: (VERB.exec(sql)?.[1] ?? "").toLowerCase(),
      table: TABLE.exec(sql)?.[1] ?? "",
    };
    if (described.size >= MAX_DESCRIBED) described.clear();
    described.set(sql, description);
  }
  return description;
}

interface QueryEvent {
  __knexQueryUid?: string;
  sql: string;
}

const registered = new WeakMap<Knex, DatabaseObserver[]>();

/** The observers of `db`, in the order they were added: for work that bypasses knex (sql.ts). */
export const observersOf = (db: Knex): readonly DatabaseObserver[] => registered.get(db) ?? [];

/** Tells `observers` of a statement begun at `start` (performance.now()) that it is done. */
export function reportStatement(
  observers: readonly DatabaseObserver[],
  text: string,
  start: number,
  error?: unknown,
): void {
  const done = {
    ...describeStatement(text),
    seconds: (performance.now() - start) / 1000,
    ...(error !== undefined && { error }),
  };
  for (const observer of observers) observer.statement?.(done);
}

/** Notes a transaction's first statement in `info`, once. */
export function noteFirst(info: TransactionInfo, text: string): void {
  if (info.first) return;
  const { operation, table } = describeStatement(text);
  info.first = table ? `${operation} ${table}` : operation;
}

/**
 * Runs `body`, a transaction that bypasses knex, inside the transaction observers of `db`. Each
 * wraps the ones registered before it, as observeDatabase's wrappers of knex's transactions do:
 * the last one registered is outermost.
 */
export function observedTransaction<T>(
  db: Knex,
  info: TransactionInfo,
  body: () => Promise<T>,
): Promise<T> {
  const observed = observersOf(db).reduce<() => Promise<T>>(
    (inner, observer) => () => (observer.transaction ? observer.transaction(inner, info) : inner()),
    body,
  );
  return observed();
}

/** Calls `observer` for every statement and transaction of `db` from now on. */
export function observeDatabase(db: Knex, observer: DatabaseObserver): void {
  registered.set(db, [...observersOf(db), observer]);
  const { statement, transaction } = observer;
  if (statement) {
    // BEGIN and COMMIT come without an id and without a response: only statements are timed.
    const started = new Map<string, number>();
    const done = (query: QueryEvent, error?: unknown) => {
      const uid = query.__knexQueryUid;
      const start = uid === undefined ? undefined : started.get(uid);
      if (start === undefined) return;
      started.delete(uid as string);
      statement({
        ...describeStatement(query.sql),
        seconds: (performance.now() - start) / 1000,
        ...(error !== undefined && { error }),
      });
    };
    db.on("query", (query: QueryEvent) => {
      if (query.__knexQueryUid !== undefined) started.set(query.__knexQueryUid, performance.now());
    });
    db.on("query-response", (_response: unknown, query: QueryEvent) => done(query));
    db.on("query-error", (error: unknown, query: QueryEvent) => done(query, error));
  }
  if (transaction) {
    const begin = db.transaction.bind(db) as (...args: unknown[]) => Promise<unknown>;
    const observed = (container: unknown, config?: unknown) => {
      // The provider forms (no function) are left as they are.
      if (typeof container !== "function") return begin(container, config);
      const info: TransactionInfo = { first: "" };
      return transaction(
        () =>
          begin((trx: Knex.Transaction) => {
            trx.once("query", (query: QueryEvent) => noteFirst(info, query.sql));
            return (container as (trx: Knex.Transaction) => unknown)(trx);
          }, config),
        info,
      );
    };
    // knex defines its methods as read-only properties of the instance.
    Object.defineProperty(db, "transaction", { value: observed, configurable: true });
  }
}
