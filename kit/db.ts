import { mkdirSync } from "node:fs";
import path from "node:path";
import knex, { type Knex } from "knex";
import { CachingBetterSqlite3 } from "./db/statement-cache.js";
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
    // knex's better-sqlite3 client, keeping each statement prepared (db/statement-cache.ts).
    client: CachingBetterSqlite3 as unknown as typeof knex.Client,
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
