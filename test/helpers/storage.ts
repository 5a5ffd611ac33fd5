// The storage a test file's services keep their data in: SQLite through better-sqlite3 (the
// default), SQLite through the sqlite3 driver, or a private PostgreSQL server that this file starts
// on first use (scripts/lib/postgres.ts) and stops after its last test. A variant file picks one
// first, then imports the suites it runs again; the fleets, `start` and `testDatabase` follow it:
//
//   import "../test/helpers/on-postgres.js";    // services/handlers.postgres.test.ts
//   import "./user/create.test.js";
//
// On PostgreSQL, every fleet or test gets a database of its own, copied from a template that holds
// every registered service's schema, migrated once per file.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { isPostgresUrl, type Knex, openDatabase, sqliteDriver } from "../../kit/db/index.js";
import { createLogger } from "../../kit/observability/logger.js";
import {
  type LocalPostgres,
  privateTempDir,
  reapAbandoned,
  startLocalPostgres,
} from "../../scripts/lib/postgres.js";
import { registry, type ServiceName } from "../../services/registry.js";
// The credentials module awaits its files as it loads. A variant file's hooks (useStorage) and its
// suites' tests must be declared in one turn, so this module waits for it too.
import "./credentials.js";

export type Storage = "sqlite" | "sqlite3" | "postgres";

let current: Storage = "sqlite";
let server: Promise<LocalPostgres & { remove(): Promise<void> }> | undefined;
let databases = 0;
/** The knex driver of every database the file's tests opened: "pg", "sqlite3", … */
const opened = new Set<string>();

const TEMPLATE = "shop_template";
const CLIENTS: Record<Storage, string> = {
  sqlite: "better-sqlite3",
  sqlite3: "sqlite3",
  postgres: "pg",
};

/**
 * Runs this file's tests on `storage`; call it before the suites are imported. After the last
 * test, the file fails unless every database its tests opened was on that storage.
 */
export function useStorage(storage: Storage): void {
  current = storage;
  if (storage === "sqlite3") process.env.SHOP_SQLITE_DRIVER = "sqlite3";
  test.after(`every database of this file was on ${CLIENTS[storage]}`, (t) => {
    t.deepEqual([...opened], [CLIENTS[storage]]);
  });
  if (storage === "postgres") {
    test.after.always("stop the file's PostgreSQL server", async () => {
      const running = await server?.catch(() => undefined);
      await running?.stop();
      await running?.remove();
    });
  }
}

/** Notes the storage of a database a test opened, for the check useStorage adds. */
export function opening(db: Knex): Knex {
  opened.add(db.client.driverName);
  return db;
}

/** Notes the storage of a database that service processes open, which follow SHOP_* settings. */
export function openingIn(location: string): void {
  opened.add(isPostgresUrl(location) ? "pg" : sqliteDriver());
}

/** The storage this file runs on. */
export const storage = (): Storage => current;

/** True when this file's services keep their data on PostgreSQL. */
export const onPostgres = () => current === "postgres";

/** The file's PostgreSQL server, started (with its template database) on first use. */
export function postgres(): Promise<LocalPostgres> {
  if (current !== "postgres") throw new Error('call useStorage("postgres") first');
  server ??= (async () => {
    await reapAbandoned();
    const dir = await privateTempDir();
    const pg = await startLocalPostgres({
      dir: `${dir}/cluster`,
      throwaway: true,
      // A test file opens many pools at once, each with a few connections.
      settings: { max_connections: 400 },
    });
    await pg.createDatabase(TEMPLATE);
    for (const service of registry.services) {
      const db = await openDatabase(pg.url(TEMPLATE), service.migrations, {
        schema: service.name,
      });
      await db.destroy();
    }
    return { ...pg, remove: () => rm(dir, { recursive: true, force: true }) };
  })();
  return server;
}

/**
 * A place for one fleet's or one test's data: ":memory:" on SQLite (each connection its own
 * database), or a new PostgreSQL database with every service's schema migrated.
 */
export async function freshDatabase(): Promise<string> {
  if (!onPostgres()) return ":memory:";
  const pg = await postgres();
  const name = `shop_${++databases}`;
  await pg.createDatabase(name, TEMPLATE);
  return pg.url(name);
}

/** A service's migrated database for one test, on this file's storage; closed when it ends. */
export async function testDatabase(t: ExecutionContext, service: ServiceName): Promise<Knex> {
  const db = await openDatabase(await freshDatabase(), registry.get(service).migrations, {
    schema: service,
  });
  t.teardown(() => db.destroy());
  return opening(db);
}

/**
 * A place with no schema, for a test of a service's migrations: an SQLite file (removed when the
 * test ends), or a new empty PostgreSQL database.
 */
export async function emptyDatabase(t: ExecutionContext): Promise<string> {
  if (onPostgres()) {
    const pg = await postgres();
    const name = `migrations_${++databases}`;
    await pg.createDatabase(name);
    return pg.url(name);
  }
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-migrations-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return path.join(dir, "service.sqlite");
}

/**
 * The database at `location` with the service's first `upTo` migrations (all by default), as an
 * upgrade finds it; closed when the test ends. knex's complaint about a migration that fails on
 * purpose stays out of the test's output.
 */
export async function migratedTo(
  t: ExecutionContext,
  service: ServiceName,
  location: string,
  upTo?: number,
): Promise<Knex> {
  const { migrations } = registry.get(service);
  const db = opening(
    await openDatabase(location, migrations.slice(0, upTo ?? migrations.length), {
      schema: service,
      logger: createLogger(service, "silent"),
    }),
  );
  t.teardown(() => db.destroy());
  return db;
}

/** knex's migrator on the service's migrations, as openDatabase runs them: for a test's downs. */
export function migratorOf(service: ServiceName): Knex.MigratorConfig {
  const { migrations } = registry.get(service);
  type Entry = (typeof migrations)[number];
  return {
    migrationSource: {
      getMigrations: async () => [...migrations],
      getMigrationName: (migration: Entry) => migration.name,
      getMigration: async (migration: Entry) => migration,
    },
    ...(onPostgres() && { schemaName: service }),
  };
}
