import knex, { type Knex } from "knex";
import { env, redactUrl, type ServerConfig, SettingError } from "../config.js";
import type { Logger } from "../observability/logger.js";
import { closable, DatabaseClosed, NoConnection } from "./closing.js";
import {
  connectPostgres,
  isPostgresUrl,
  MAX_STATEMENT_TIMEOUT_MS,
  migratePostgres,
  type PostgresOptions,
  postgresErrors,
} from "./postgres.js";
import { NoTurn } from "./row-turns.js";
import type { Binding } from "./sql-api.js";
import { SQLITE_DRIVERS, type SqliteDriver, sqliteConfig, sqliteErrors } from "./sqlite.js";
import { WalSync } from "./wal-sync.js";

export { closeToNewWork } from "./closing.js";
export {
  type DatabaseObserver,
  describeStatement,
  observeDatabase,
  type Statement,
  type TransactionInfo,
} from "./observe.js";
export { type PageOptions, pageBySeq, textBytes } from "./pages.js";
export { RowTurns } from "./row-turns.js";
export {
  type Binding,
  inTransaction,
  type Sql,
  type SqlStatements,
  sqlOf,
  valuesOf,
} from "./sql.js";
export { isUncommitted } from "./uncommitted.js";
export type { Knex, SqliteDriver };
export { isPostgresUrl };

// Where a service's data lives, by its location: an SQLite file (or ":memory:") or a
// postgres:// URL. Everything that differs between the engines is in this file and in db/: how a
// database is opened and migrated, which errors mean what, how integers come back, and which
// transactions are run again. The stores' SQL is the same on both.

/** One knex migration, kept beside the service that owns the tables. */
export interface Migration {
  name: string;
  up(db: Knex): Promise<void>;
  down(db: Knex): Promise<void>;
}

/** How to open a database; each unset field takes its SHOP_* setting (README "Configuration"). */
export interface DatabaseOptions {
  /** PostgreSQL: the schema of the service's tables, by convention the service's name. */
  schema?: string;
  /** SQLite: SHOP_SQLITE_DRIVER, better-sqlite3 by default. */
  sqliteDriver?: SqliteDriver;
  /** PostgreSQL: SHOP_DATABASE_POOL_MAX, 10 by default. */
  poolMax?: number;
  /** PostgreSQL: SHOP_DATABASE_STATEMENT_TIMEOUT_MS, 5000 by default; 0 for none. */
  statementTimeoutMs?: number;
  /** PostgreSQL: the name pg_stat_activity shows; "shopmesh <schema>" by default. */
  applicationName?: string;
  /** PostgreSQL: SHOP_DATABASE_PREPARED_STATEMENTS, true by default. */
  preparedStatements?: boolean;
  /** Where knex's own warnings go (a connection that failed, say), instead of the console. */
  logger?: Logger;
}

/** How often a warning knex repeats is logged again, with the count of those it stands for. */
export const REPEATED_WARNING_MS = 10_000;

/**
 * knex's warn, to `logger`: each warning's first line, since knex adds a stack of its own pool's
 * frames. The same line again within REPEATED_WARNING_MS is counted, not logged: knex warns for
 * every connection that fails, hundreds a second while a database is down.
 */
function knexWarn(logger: Logger) {
  const seen = new Map<string, { at: number; repeated: number }>();
  return (message: unknown) => {
    const line = String(message).split("\n", 1)[0] as string;
    const now = Date.now();
    const last = seen.get(line);
    if (last && now - last.at < REPEATED_WARNING_MS) {
      last.repeated++;
      return;
    }
    if (seen.size > 100) seen.clear();
    seen.set(line, { at: now, repeated: 0 });
    logger.warn({ component: "knex", ...(last && { repeated: last.repeated }) }, line);
  };
}

/** knex's log functions, writing to `logger` as JSON lines like everything else. */
const knexLog = (logger: Logger | undefined): Pick<Knex.Config, "log"> =>
  logger
    ? {
        log: {
          warn: knexWarn(logger),
          error: (message: unknown) => logger.error({ component: "knex" }, String(message)),
          deprecate: (method: string, alternative: string) =>
            logger.warn({ component: "knex" }, `${method} is deprecated: ${alternative}`),
          debug: (message: unknown) => logger.debug({ component: "knex" }, String(message)),
        },
      }
    : {};

/**
 * What an answer waits for while a commit it tells of may not be on disk (kit/db/wal-sync.ts):
 * an SQLite file's WAL sync, which sees the commits of every connection to the file, unless
 * `sync` leaves syncing to SQLite's checkpoints. None on PostgreSQL, whose commit is durable
 * itself, nor for ":memory:".
 */
export function walSyncOf(location: string, sync: ServerConfig["sqliteSync"]) {
  return sync === "before-reply" && location !== ":memory:" && !isPostgresUrl(location)
    ? new WalSync(location)
    : undefined;
}

/** The SQLite driver SHOP_SQLITE_DRIVER names; better-sqlite3 unless it says sqlite3. */
export function sqliteDriver(): SqliteDriver {
  const driver = env.string("SHOP_SQLITE_DRIVER", "better-sqlite3");
  if (!(SQLITE_DRIVERS as readonly string[]).includes(driver)) {
    throw new SettingError(
      `SHOP_SQLITE_DRIVER must be one of ${SQLITE_DRIVERS.join(", ")}, got "${driver}"`,
    );
  }
  return driver as SqliteDriver;
}

function postgresOptions(options: DatabaseOptions): PostgresOptions {
  const schema = options.schema ?? "public";
  const poolMax = options.poolMax ?? env.int("SHOP_DATABASE_POOL_MAX", 10, { min: 1 });
  const statementTimeoutMs =
    options.statementTimeoutMs ??
    env.ms("SHOP_DATABASE_STATEMENT_TIMEOUT_MS", 5_000, 0, MAX_STATEMENT_TIMEOUT_MS);
  // The settings are checked as they are read; a program's own options here.
  if (!Number.isInteger(poolMax) || poolMax < 1) {
    throw new RangeError(`poolMax must be an integer of at least 1, got ${poolMax}`);
  }
  if (!Number.isInteger(statementTimeoutMs) || statementTimeoutMs < 0) {
    throw new RangeError(
      `statementTimeoutMs must be an integer of at least 0, got ${statementTimeoutMs}`,
    );
  }
  const applicationName = options.applicationName ?? `shopmesh ${schema}`;
  const preparedStatements =
    options.preparedStatements ?? env.bool("SHOP_DATABASE_PREPARED_STATEMENTS", true);
  return { schema, poolMax, statementTimeoutMs, applicationName, preparedStatements };
}

/**
 * A migration of this build failed. Knex runs a batch of migrations in one transaction, so none
 * of the batch was kept: the database is as it was before.
 */
export class MigrationFailed extends Error {
  constructor(
    readonly migration: string,
    direction: "up" | "down",
    cause: unknown,
  ) {
    const what = direction === "up" ? "failed" : "failed to go back down";
    super(
      `migration ${migration} ${what}, and none of its batch was kept: ${(cause as Error | undefined)?.message ?? String(cause)}`,
      { cause },
    );
    this.name = "MigrationFailed";
  }
}

const migrationSourceOf = (migrations: readonly Migration[]) => ({
  getMigrations: async () => [...migrations],
  getMigrationName: (migration: Migration) => migration.name,
  getMigration: async ({ name, up, down }: Migration) => ({
    up: (db: Knex) =>
      up(db).catch((error: unknown) => Promise.reject(new MigrationFailed(name, "up", error))),
    down: (db: Knex) =>
      down(db).catch((error: unknown) => Promise.reject(new MigrationFailed(name, "down", error))),
  }),
});

/** Warns, in one line, of the migrations `db` has applied that are not among `migrations`. */
async function warnOfUnknownMigrations(
  db: Knex,
  migrations: readonly Migration[],
  logger: Logger | undefined,
): Promise<void> {
  const known = new Set(migrations.map((migration) => migration.name));
  const applied: string[] = await db("knex_migrations").pluck("name");
  const unknown = applied.filter((name) => !known.has(name));
  if (unknown.length === 0) return;
  const message = `the database has migrations this build does not know, from a newer one: ${unknown.join(", ")}`;
  if (logger) logger.warn({ component: "migrate", unknown }, message);
  else console.warn(`warning: ${message}`);
}

/** Connects to a database without migrating it, e.g. to read what a service wrote. */
export function connectDatabase(location: string, options: DatabaseOptions = {}): Knex {
  if (isPostgresUrl(location)) {
    return closable(connectPostgres(location, postgresOptions(options), knexLog(options.logger)));
  }
  return closable(
    knex({
      ...sqliteConfig(location, options.sqliteDriver ?? sqliteDriver()),
      ...knexLog(options.logger),
    }),
  );
}

/**
 * Opens a service's database and runs its migrations to the latest: an SQLite file (its folder
 * created; WAL, a busy timeout and foreign keys on every connection) or ":memory:", or the
 * service's schema in the PostgreSQL database a postgres:// URL names.
 */
export async function openDatabase(
  location: string,
  migrations: readonly Migration[],
  options: DatabaseOptions = {},
): Promise<Knex> {
  const migrationSource = migrationSourceOf(migrations);
  if (isPostgresUrl(location)) {
    const settings = postgresOptions(options);
    await migratePostgres(location, settings, migrationSource, knexLog(options.logger));
    const forReads = readShareOf(settings.poolMax);
    const db = closable(
      connectPostgres(
        location,
        { ...settings, poolMax: settings.poolMax - forReads },
        knexLog(options.logger),
      ),
    );
    if (forReads > 0) {
      // closable for its NoConnection: a connection not made is UNAVAILABLE, as for writes.
      // Closing `db` to new work leaves it going.
      readPools.set(db, () =>
        closable(
          connectPostgres(
            location,
            {
              ...settings,
              poolMax: forReads,
              applicationName: `${settings.applicationName} reads`,
            },
            knexLog(options.logger),
          ),
        ),
      );
    }
    await warnOfUnknownMigrations(db, migrations, options.logger).catch(async (error) => {
      await db.destroy();
      throw error;
    });
    return db;
  }
  // On SQLite the migrations run on the service's own connection: ":memory:" is per connection.
  const db = connectDatabase(location, options);
  // Replicas that share a new file race to create knex's bookkeeping tables; the loser retries.
  for (let attempt = 1; ; attempt++) {
    try {
      // Newer migrations than this build's are left as they are: see migratePostgres.
      await db.migrate.latest({ migrationSource, disableMigrationsListValidation: true });
      await warnOfUnknownMigrations(db, migrations, options.logger);
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

/**
 * The connections of a PostgreSQL pool of `poolMax` kept for reads outside a transaction: a
 * quarter, at least one, when there are two or more. The rest serve writes and transactions.
 */
const readShareOf = (poolMax: number) => (poolMax < 2 ? 0 : Math.max(1, Math.round(poolMax / 4)));

/** How openReads connects the reads of a PostgreSQL database openDatabase opened. */
const readPools = new WeakMap<Knex, () => Knex>();

/**
 * The database `db` for reads outside a transaction. A write that waits for a lock another
 * process holds keeps its connection meanwhile, up to 5 s, and reads queued behind it for a
 * connection waited as long, though neither engine makes a plain read wait for a writer. SQLite
 * serves a process's writes through one connection (db/sqlite.ts), so an SQLite file gets a second
 * one, for reads; on PostgreSQL the reads get their own share of SHOP_DATABASE_POOL_MAX
 * (readShareOf). ":memory:" is one database per connection, so it reads on `db` itself, as does a
 * PostgreSQL pool of one. Close it before `db`.
 */
export function openReads(db: Knex): Knex {
  const pool = readPools.get(db);
  if (pool) return pool();
  const config = db.client.config as Knex.Config;
  const filename = (config.connection as { filename?: unknown } | undefined)?.filename;
  if (engineOf(db) !== "sqlite" || typeof filename !== "string" || filename === ":memory:") {
    return db;
  }
  // A config of its own: closing `db` to new work (closing.ts) leaves its reads going.
  return knex({ ...config, connection: { filename } });
}

/** Brings a database to its latest schema, then closes it. */
export async function migrateDatabase(
  location: string,
  migrations: readonly Migration[],
  options: DatabaseOptions = {},
): Promise<void> {
  const db = await openDatabase(location, migrations, options);
  await db.destroy();
}

/** What stopped openDatabase at `location`: "cannot migrate …: …" or "cannot open …: …". */
export function openFailure(location: string, error: unknown): string {
  const what = error instanceof MigrationFailed ? "cannot migrate" : "cannot open";
  return `${what} ${describeLocation(location)}: ${(error as Error | undefined)?.message ?? String(error)}`;
}

/** A location fit for a log line or a banner: a URL's password is left out. */
export function describeLocation(location: string): string {
  return isPostgresUrl(location) ? redactUrl(location) : location;
}

/** Which engine a database is on. */
export const engineOf = (db: Knex): "sqlite" | "postgres" =>
  db.client.driverName === "pg" ? "postgres" : "sqlite";

/** True when a write broke a UNIQUE or PRIMARY KEY constraint. */
export function isUniqueViolation(error: unknown): boolean {
  return sqliteErrors.unique(error) || postgresErrors.unique(error);
}

/** True when a write broke a CHECK constraint, such as a bound on a column. */
export function isCheckViolation(error: unknown): boolean {
  return sqliteErrors.check(error) || postgresErrors.check(error);
}

/**
 * True when the database had no room for a write (a full disk; PostgreSQL out of memory too) and
 * kept nothing of it. Trying again will not help until an operator makes room.
 */
export function isFull(error: unknown): boolean {
  return sqliteErrors.full(error) || postgresErrors.full(error);
}

/**
 * True when the connection to the database was lost under a statement: the caller may try
 * again, but a write cut while it committed may have been kept (an rpc's idempotency covers it).
 */
export function isConnectionLost(error: unknown): boolean {
  return postgresErrors.connectionLost(error);
}

/**
 * True when the service's database closed to new work as its shutdown's grace period ended
 * (closeToNewWork): the statement did not run.
 */
export const isClosedToNewWork = (error: unknown): boolean => error instanceof DatabaseClosed;

/**
 * True when the database could not take the statement now and kept nothing of it: SQLite busy
 * past its timeout; PostgreSQL's serialization failures and deadlocks (once inTransaction gave
 * up), lock and statement timeouts, a server shutting down or full; no connection to be had (a
 * host that does not resolve, cannot be reached, closes the connection or never answers as it
 * is made, or no free connection in the pool in time), or no turn at a busy row (RowTurns). The
 * caller may try again.
 */
export function isBusy(error: unknown): boolean {
  const { code, name, syscall } = (error ?? {}) as {
    code?: unknown;
    name?: unknown;
    syscall?: unknown;
  };
  return (
    sqliteErrors.busy(error) ||
    postgresErrors.busy(error) ||
    code === "ECONNREFUSED" ||
    // A connection that was never made (an unknown or unreachable host): no statement ran.
    syscall === "getaddrinfo" ||
    syscall === "connect" ||
    name === "KnexTimeoutError" ||
    error instanceof NoConnection ||
    error instanceof NoTurn
  );
}

/**
 * SQL for the `update_time` of a row a write changes, with `now` bound twice: `now`, or a
 * millisecond past the row's own when that is not earlier. A write reads the clock before it
 * waits for the row, so one that waited behind a later one would otherwise move the time back.
 */
export const UPDATE_TIME_AFTER = "CASE WHEN update_time >= ? THEN update_time + 1 ELSE ? END";

/** UPDATE_TIME_AFTER as a value of a knex update. */
export const updateTimeAfter = (db: Knex, now: number): Knex.Raw =>
  db.raw(UPDATE_TIME_AFTER, [now, now]);

/**
 * The `update_time` an UPDATE that writes `changes` (column → value, none of them NULL) sets:
 * past the row's own (UPDATE_TIME_AFTER) when any value differs from the row's, else the row's
 * own. A write that changes nothing has not changed the row, and its update time says so.
 */
export function updateTimeOf(db: Knex, changes: object, now: number): Knex.Raw {
  const values = changes as Record<string, Binding>;
  const columns = Object.keys(values);
  if (columns.length === 0) return db.raw("??", ["update_time"]);
  return db.raw(
    `CASE WHEN ${columns.map(() => "?? <> ?").join(" OR ")} THEN ${UPDATE_TIME_AFTER} ELSE ?? END`,
    [...columns.flatMap((column) => [column, values[column] as Binding]), now, now, "update_time"],
  );
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

/**
 * A stored time in milliseconds since the epoch (a bigint column): PostgreSQL returns a bigint as
 * a decimal string, SQLite as a number.
 */
export function readTime(value: unknown): number {
  const time = Number(value);
  if (!Number.isSafeInteger(time)) throw new Error(`not a stored time: ${String(value)}`);
  return time;
}
