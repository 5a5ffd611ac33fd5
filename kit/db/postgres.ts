// PostgreSQL through knex's `pg` client: a service's tables live in a schema of their own (named
// after the service), reached through search_path, so one database can hold every service and no
// service sees another's tables. Only kit/db/index.ts and the sql files use this file.
import knex, { type Knex } from "knex";
import ConnectionParameters from "pg/lib/connection-parameters.js";
import { MAX_TIMER_MS } from "../config.js";

export interface PostgresOptions {
  /** The schema of the service's tables; created by the first migration run when missing. */
  schema: string;
  /** Connections this process keeps open at most. */
  poolMax: number;
  /** The server cancels a statement running longer than this; 0 for no limit. */
  statementTimeoutMs: number;
  /** Shown in pg_stat_activity: which service a connection belongs to. */
  applicationName: string;
  /**
   * sqlOf's statements named, so each connection prepares each once (sql-postgres.ts). Off for
   * a pooler in transaction mode that cannot keep them (PgBouncer before 1.21, or without
   * max_prepared_statements).
   */
  preparedStatements: boolean;
}

export const isPostgresUrl = (location: string) => /^postgres(ql)?:\/\//i.test(location);

/**
 * Where node-postgres connects for `url` and whether over TLS, read by the driver's own code, so
 * PGHOST and PGSSLMODE count and a setting given twice counts as the driver counts it. A Unix
 * socket's host is its folder ("/…"). Undefined when the driver cannot read the URL (a CA file
 * it names is missing, say): it will not connect either.
 */
export function postgresTarget(url: string): { host: string; tls: boolean } | undefined {
  try {
    const { host, ssl } = new ConnectionParameters({ connectionString: url });
    return { host: String(host), tls: Boolean(ssl) };
  } catch {
    return undefined;
  }
}

// The URL (host, port, database, user, password, and TLS: sslmode, sslrootcert, sslcert, sslkey)
// is parsed by the driver itself; what it says wins over the settings given here.
const connection = (url: string, settings: Record<string, unknown>) => ({
  ...readCommitted(url),
  connectionTimeoutMillis: 5_000,
  keepAlive: true,
  ...settings,
});

/** The startup option that makes every transaction of a session READ COMMITTED. */
const READ_COMMITTED = "-c default_transaction_isolation=read\\ committed";

/**
 * A session READ COMMITTED whatever the server's default, which the stores' row locks are built
 * for (docs/architecture.md). Under SERIALIZABLE their transactions also failed as serialization
 * failures, which four tries did not always outlast: a refused order could not be discarded, and
 * its caller got ABORTED, not the refusal. pg takes a URL's own `options` over the config's, so
 * those are kept, with this one added.
 */
function readCommitted(url: string): { connectionString: string; options?: string } {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { connectionString: url, options: READ_COMMITTED };
  }
  const given = parsed.searchParams.get("options");
  if (!given) return { connectionString: url, options: READ_COMMITTED };
  parsed.searchParams.set("options", `${given} ${READ_COMMITTED}`);
  return { connectionString: parsed.toString() };
}

/** The databases whose statements sqlOf sends unnamed. */
const unnamed = new WeakSet<Knex>();

/** A knex on one service's schema in the database at `url`; `more` adds to its config. */
export function connectPostgres(url: string, options: PostgresOptions, more: Knex.Config): Knex {
  const db = knex({ ...postgresConfig(url, options), ...more });
  if (!options.preparedStatements) unnamed.add(db);
  return db;
}

/** Whether sqlOf names the statements it runs on `db` (PostgresOptions.preparedStatements). */
export const namesStatements = (db: Knex): boolean => !unnamed.has(db);

/**
 * How long past the statement timeout the driver waits for an answer. A server that answers at all
 * cancels the statement first; one that never answers (a partition, a failover) is given up.
 */
const REPLY_MARGIN_MS = 2_000;

/** The longest statement timeout whose reply timer, with REPLY_MARGIN_MS, Node still takes. */
export const MAX_STATEMENT_TIMEOUT_MS = MAX_TIMER_MS - REPLY_MARGIN_MS;

/**
 * Whether a connection may be handed out again: not while a statement it gave up on is still
 * waiting for its answer, which every later statement would queue behind.
 */
const idle = (connection: { readyForQuery?: boolean }) => connection.readyForQuery !== false;

function postgresConfig(url: string, options: PostgresOptions): Knex.Config {
  const timeoutMs = options.statementTimeoutMs;
  return {
    client: "pg",
    connection: connection(url, {
      application_name: options.applicationName,
      ...(timeoutMs > 0 && {
        statement_timeout: timeoutMs,
        query_timeout: timeoutMs + REPLY_MARGIN_MS,
        // No transaction here waits between its statements: a session idle inside one that long
        // is a paused or cut-off process, and the server ends it rather than keep its row locks.
        idle_in_transaction_session_timeout: timeoutMs,
      }),
    }),
    searchPath: [options.schema],
    // An error's message names the statement with placeholders, not the user data bound to it.
    compileSqlOnError: false,
    // Connections open on demand and close after 30 s idle; a call that finds all of them busy
    // waits for one up to 5 s, then fails UNAVAILABLE (kit/middleware/status.ts). One left
    // waiting on a reply that never came is dropped, not handed out again.
    pool: { min: 0, max: options.poolMax, idleTimeoutMillis: 30_000, validate: idle },
    acquireConnectionTimeout: 5_000,
  };
}

/**
 * Creates the schema when missing and runs the migrations to the latest, on one connection that
 * holds an advisory lock for the schema: replicas that start together on one database migrate it
 * once, one after the other, instead of racing to create knex's bookkeeping tables.
 */
export async function migratePostgres(
  url: string,
  options: Pick<PostgresOptions, "schema" | "applicationName">,
  migrationSource: Knex.MigratorConfig["migrationSource"],
  more: Knex.Config = {},
): Promise<void> {
  const { schema } = options;
  const db = knex({
    client: "pg",
    connection: connection(url, { application_name: `${options.applicationName} migrate` }),
    searchPath: [schema],
    pool: { min: 1, max: 1 },
    ...more,
  });
  try {
    await takeMigrationLock(db, schema, more.log?.warn ?? console.warn);
    // Looked up rather than CREATE SCHEMA IF NOT EXISTS, which needs the CREATE privilege on the
    // database even when the schema exists: an operator may create it and grant only that.
    const { rows } = await db.raw("select 1 from pg_namespace where nspname = ?", [schema]);
    if (rows.length === 0) await db.raw("create schema ??", [schema]);
    // A build runs its own migrations the database lacks and leaves those a newer build applied
    // (mid-rollout, or before a rollback), where knex would refuse to start ("the migration
    // directory is corrupt"): migrations are additive, so the older build runs on.
    await db.migrate.latest({
      migrationSource,
      schemaName: schema,
      disableMigrationsListValidation: true,
    });
  } finally {
    // Closing the session releases the lock.
    await db.destroy();
  }
}

/**
 * Takes the advisory lock that lets one process at a time migrate `schema`. While another holds
 * it (a replica migrating, or one stalled or cut off mid-migration), says once who it is.
 */
async function takeMigrationLock(db: Knex, schema: string, warn: (message: string) => void) {
  const key = `shopmesh migrate ${schema}`;
  const { rows } = await db.raw("select pg_try_advisory_lock(hashtext(?)) as taken", [key]);
  if (rows[0]?.taken) return;
  // A one-bigint advisory key shows in pg_locks as its high (classid) and low (objid) halves.
  const holders = await db.raw(
    `select a.pid, a.application_name, a.client_addr from pg_locks l
     join pg_stat_activity a on a.pid = l.pid
     where l.locktype = 'advisory' and l.granted and l.objsubid = 1
       and l.database = (select oid from pg_database where datname = current_database())
       and ((l.classid::bigint << 32) | l.objid::bigint) = hashtext(?)::bigint`,
    [key],
  );
  const who = (holders.rows as { pid: number; application_name: string; client_addr: unknown }[])
    .map((row) => `${row.application_name || "?"} (pid ${row.pid}, ${row.client_addr ?? "local"})`)
    .join(", ");
  warn(`waiting for the migration lock of schema "${schema}", held by ${who || "another session"}`);
  await db.raw("select pg_advisory_lock(hashtext(?))", [key]);
}

// SQLSTATE codes (PostgreSQL's "Errors and Messages" appendix).
const UNIQUE_VIOLATION = "23505";
const CHECK_VIOLATION = "23514";
const SERIALIZATION_FAILURE = "40001";
const DEADLOCK_DETECTED = "40P01";
const FEATURE_NOT_SUPPORTED = "0A000";
/** The statement or session ended before anything was committed: a later try may succeed. */
const NOT_NOW = new Set([
  SERIALIZATION_FAILURE,
  DEADLOCK_DETECTED,
  "55P03", // lock_not_available
  "57014", // query_canceled: statement_timeout
  "25P03", // idle_in_transaction_session_timeout: the session ended before its COMMIT
  "57P01", // admin_shutdown
  "57P03", // cannot_connect_now: starting up or shutting down
  "53300", // too_many_connections
]);

/** The server had no room for the statement: the transaction was rolled back. */
const NO_ROOM = new Set([
  "53100", // disk_full
  "53200", // out_of_memory
]);

/**
 * node-postgres's messages for a connection that closed under a query, or before it, or that
 * stopped answering one (query_timeout).
 */
const LOST_CONNECTION = /Connection terminated|is not queryable|Query read timeout/;

const codeOf = (error: unknown) => String((error as { code?: unknown } | null)?.code ?? "");
const messageOf = (error: unknown) => String((error as { message?: unknown } | null)?.message);

export const postgresErrors = {
  unique: (error: unknown) => codeOf(error) === UNIQUE_VIOLATION,
  check: (error: unknown) => codeOf(error) === CHECK_VIOLATION,
  /** The transaction was rolled back to keep transactions apart: run it again. */
  serialization: (error: unknown) =>
    [SERIALIZATION_FAILURE, DEADLOCK_DETECTED].includes(codeOf(error)),
  /** The server ran out of disk or memory for the statement; nothing of it was kept. */
  full: (error: unknown) => NO_ROOM.has(codeOf(error)),
  /** Nothing was written, and the server could take the call later. */
  busy: (error: unknown) => NOT_NOW.has(codeOf(error)),
  /**
   * The connection died under the statement (the server went away, or an administrator ended
   * the session): node-postgres says so in words, without a SQLSTATE. A COMMIT it cut may or may
   * not have been kept.
   */
  connectionLost: (error: unknown) =>
    LOST_CONNECTION.test(messageOf(error)) || ["ECONNRESET", "EPIPE"].includes(codeOf(error)),
  /**
   * A prepared statement that no longer fits its table (a migration changed the columns a
   * `SELECT *` returns): the statement did nothing, and one prepared again will run.
   */
  stalePlan: (error: unknown) =>
    codeOf(error) === FEATURE_NOT_SUPPORTED && /cached plan must not change/.test(messageOf(error)),
};

/**
 * Runs `transaction`, and runs it again (up to 4 times in all, after a short random wait) when it
 * failed with an error `again` accepts: one that means nothing of it was kept.
 */
export async function runAgainWhen<T>(
  again: (error: unknown) => boolean,
  transaction: () => Promise<T>,
): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await transaction();
    } catch (error) {
      if (!again(error) || attempt === 4) throw error;
      await new Promise((resolve) => setTimeout(resolve, Math.random() * 10 * 2 ** attempt));
    }
  }
}
