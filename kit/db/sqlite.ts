// SQLite, the embedded default, through either driver knex supports: better-sqlite3 (the default:
// synchronous, no hop to a worker thread per statement) or sqlite3 (node-sqlite3, the driver the
// project was first specified with). Only kit/db/index.ts uses this file.
import { mkdirSync } from "node:fs";
import path from "node:path";
import type { Knex } from "knex";
import { LOCK_WAIT_MS } from "./lock-wait.js";
import { CachingBetterSqlite3 } from "./statement-cache.js";
import { CachingSqlite3 } from "./statement-cache-sqlite3.js";

export const SQLITE_DRIVERS = ["better-sqlite3", "sqlite3"] as const;
export type SqliteDriver = (typeof SQLITE_DRIVERS)[number];

/**
 * Each new connection's settings. better-sqlite3 waits for a lock itself, without blocking the
 * process (lock-wait.ts); node-sqlite3 waits on its worker thread.
 */
const pragmasOf = (driver: SqliteDriver) => [
  "journal_mode = WAL",
  `busy_timeout = ${driver === "better-sqlite3" ? 0 : LOCK_WAIT_MS}`,
  "foreign_keys = ON",
  // Synced at checkpoints; an answer that tells of a commit waits for a sync (wal-sync.ts).
  "synchronous = NORMAL",
];

/** What each driver's connection offers to run the pragmas on a new connection. */
type Connection = {
  pragma?(sql: string): unknown;
  exec?(sql: string, done: (error: Error | null) => void): void;
};

/** The knex config of an SQLite file (its folder created) or ":memory:". */
export function sqliteConfig(filename: string, driver: SqliteDriver): Knex.Config {
  if (filename !== ":memory:") mkdirSync(path.dirname(filename), { recursive: true });
  return {
    // knex's client of either driver, keeping each statement prepared (the statement-cache files).
    client: (driver === "better-sqlite3"
      ? CachingBetterSqlite3
      : CachingSqlite3) as unknown as NonNullable<Knex.Config["client"]>,
    connection: { filename },
    useNullAsDefault: true,
    // An error's message names the statement with placeholders, not the user data bound to it.
    compileSqlOnError: false,
    // SQLite takes one writer at a time; one connection per process keeps ":memory:" a single
    // database and turns contention between replicas sharing a file into waits for the lock,
    // short because every write transaction takes the write lock in its first statement.
    pool: {
      min: 1,
      max: 1,
      afterCreate(connection: Connection, done: (error: Error | null, c: unknown) => void) {
        const pragmas = pragmasOf(driver);
        if (connection.pragma) {
          for (const pragma of pragmas) connection.pragma(pragma);
          done(null, connection);
        } else {
          connection.exec?.(pragmas.map((pragma) => `PRAGMA ${pragma};`).join(" "), (error) =>
            done(error, connection),
          );
        }
      },
    },
  };
}

// better-sqlite3 reports extended result codes (SQLITE_CONSTRAINT_UNIQUE); node-sqlite3 only the
// primary one (SQLITE_CONSTRAINT), with the kind of constraint in its message.
const codeOf = (error: unknown) => String((error as { code?: unknown } | null)?.code ?? "");
const messageOf = (error: unknown) => String((error as { message?: unknown } | null)?.message);

export const sqliteErrors = {
  unique(error: unknown): boolean {
    const code = codeOf(error);
    return (
      code === "SQLITE_CONSTRAINT_UNIQUE" ||
      code === "SQLITE_CONSTRAINT_PRIMARYKEY" ||
      (code === "SQLITE_CONSTRAINT" &&
        /(UNIQUE|PRIMARY KEY) constraint failed/.test(messageOf(error)))
    );
  },
  check(error: unknown): boolean {
    const code = codeOf(error);
    return (
      code === "SQLITE_CONSTRAINT_CHECK" ||
      (code === "SQLITE_CONSTRAINT" && /CHECK constraint failed/.test(messageOf(error)))
    );
  },
  /** The disk, or the database's page limit, had no room for the write: nothing was kept. */
  full(error: unknown): boolean {
    return codeOf(error) === "SQLITE_FULL";
  },
  /** Another connection held the lock past LOCK_WAIT_MS: nothing was written. */
  busy(error: unknown): boolean {
    return codeOf(error).startsWith("SQLITE_BUSY");
  },
};
