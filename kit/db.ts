import { mkdirSync } from "node:fs";
import path from "node:path";
import knex, { type Knex } from "knex";
import { fitting } from "./page-token.js";

export type { Knex };

const PRAGMAS = [
  "journal_mode = WAL",
  "busy_timeout = 5000",
  "foreign_keys = ON",
  "synchronous = NORMAL",
];

/** One knex migration, kept beside the service that owns the tables. */
export interface Migration {
  name: string;
  up(db: Knex): Promise<void>;
  down(db: Knex): Promise<void>;
}

/**
 * Opens a service's SQLite database (creating its folder), applies WAL, a busy timeout and
 * foreign keys on every connection, and runs the service's migrations to the latest.
 */
export async function openDatabase(
  filename: string,
  migrations: readonly Migration[],
): Promise<Knex> {
  if (filename !== ":memory:") mkdirSync(path.dirname(filename), { recursive: true });
  const db = knex({
    client: "better-sqlite3",
    connection: { filename },
    useNullAsDefault: true,
    // better-sqlite3 runs each statement synchronously: no hop to a worker thread per query,
    // which was most of a read's cost with the asynchronous driver. SQLite takes one writer at a
    // time; one connection per process keeps ":memory:" a single database and turns contention
    // between replicas sharing a file into busy_timeout waits, short because every write
    // transaction takes the write lock in its first statement.
    pool: {
      min: 1,
      max: 1,
      afterCreate(
        connection: { pragma(sql: string): unknown },
        done: (error: Error | null, connection: unknown) => void,
      ) {
        for (const pragma of PRAGMAS) connection.pragma(pragma);
        done(null, connection);
      },
    },
  });
  const migrationSource = {
    getMigrations: async () => [...migrations],
    getMigrationName: (migration: Migration) => migration.name,
    getMigration: async (migration: Migration) => migration,
  };
  // Replicas that share a new file race to create knex's bookkeeping tables; the loser retries.
  for (let attempt = 1; ; attempt++) {
    try {
      await db.migrate.latest({ migrationSource });
      return db;
    } catch (error) {
      const racing = error instanceof Error && /already exists|already locked/.test(error.message);
      if (!racing || attempt === 5) {
        await db.destroy();
        throw error;
      }
      await new Promise((resolve) => setTimeout(resolve, 100 * attempt));
    }
  }
}

const sqliteCode = (error: unknown) => String((error as { code?: unknown } | null)?.code ?? "");

/** True when a write broke a UNIQUE or PRIMARY KEY constraint. */
export function isUniqueViolation(error: unknown): boolean {
  return ["SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"].includes(sqliteCode(error));
}

/** True when a write broke a CHECK constraint, such as a bound on a column. */
export function isCheckViolation(error: unknown): boolean {
  return sqliteCode(error) === "SQLITE_CONSTRAINT_CHECK";
}

/**
 * An exact integer as a query binding. A decimal string: SQLite stores it as an INTEGER in an
 * integer column and PostgreSQL casts it to bigint, both exactly, whereas a JS number past 2^53
 * is already rounded, and knex cannot format a bigint binding into the message of a failed query.
 */
export const integerBinding = (value: bigint): string => value.toString();

/**
 * An integer column's value exactly, as a driver returns it: a number (only when it is a safe
 * integer, since a larger one may already be rounded), a bigint, or a decimal string. Undefined for
 * anything else, such as a REAL or a rounded number: the caller decides what an unreadable value
 * means rather than passing a rounded one on.
 */
export function readInteger(value: unknown): bigint | undefined {
  if (typeof value === "bigint") return value;
  if (typeof value === "number") return Number.isSafeInteger(value) ? BigInt(value) : undefined;
  if (typeof value === "string" && /^-?\d{1,19}$/.test(value)) return BigInt(value);
  return undefined;
}

/** True when SQLite gave up waiting for another connection's lock: worth a retry. */
export function isBusy(error: unknown): boolean {
  return sqliteCode(error).startsWith("SQLITE_BUSY");
}

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

/** The verb and first table of a SQL statement. */
export function describeStatement(sql: string): { operation: string; table: string } {
  return {
    operation: (VERB.exec(sql)?.[1] ?? "").toLowerCase(),
    table: TABLE.exec(sql)?.[1] ?? "",
  };
}

interface QueryEvent {
  __knexQueryUid?: string;
  sql: string;
}

/** Calls `observer` for every statement and transaction of `db` from now on. */
export function observeDatabase(db: Knex, observer: DatabaseObserver): void {
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
            trx.once("query", (query: QueryEvent) => {
              const { operation, table } = describeStatement(query.sql);
              info.first = table ? `${operation} ${table}` : operation;
            });
            return (container as (trx: Knex.Transaction) => unknown)(trx);
          }, config),
        info,
      );
    };
    // knex defines its methods as read-only properties of the instance.
    Object.defineProperty(db, "transaction", { value: observed, configurable: true });
  }
}

/** Brings a database file to its latest schema, then closes it. */
export async function migrateDatabase(
  filename: string,
  migrations: readonly Migration[],
): Promise<void> {
  const db = await openDatabase(filename, migrations);
  await db.destroy();
}

export interface PageOptions<Row, Item> {
  /** The seq a previous page ended at: the page continues after it (before it, newest first). */
  from?: number;
  newestFirst?: boolean;
  /** What the rows become (for example, with rows of another table); one item per row. */
  items?: (rows: Row[]) => Item[] | Promise<Item[]>;
  /** An item's encoded size, roughly: the page stops before it passes PAGE_BYTES. */
  sizeOf?: (item: Item) => number;
}

/**
 * One page of a table in `seq` order (keyset pagination): up to `limit` items, fewer when their
 * sizes would pass PAGE_BYTES (at least one), and the seq to continue from when more remain.
 */
export async function pageBySeq<Row extends { seq: number }, Item = Row>(
  query: Knex.QueryBuilder,
  limit: number,
  options: PageOptions<Row, Item> = {},
): Promise<{ items: Item[]; nextSeq?: number }> {
  const { from, newestFirst = false, sizeOf } = options;
  if (from !== undefined) query.where("seq", newestFirst ? "<" : ">", from);
  const rows = (await query.orderBy("seq", newestFirst ? "desc" : "asc").limit(limit + 1)) as Row[];
  const candidates = rows.slice(0, limit);
  const items = options.items ? await options.items(candidates) : (candidates as unknown as Item[]);
  const count = sizeOf ? fitting(items.map(sizeOf)) : items.length;
  const last = rows[count - 1];
  return {
    items: items.slice(0, count),
    ...(rows.length > count && last && { nextSeq: last.seq }),
  };
}
