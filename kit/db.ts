import { mkdirSync } from "node:fs";
import path from "node:path";
import knex, { type Knex } from "knex";

export type { Knex };

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
export async function openDatabase(filename: string, migrations: Migration[]): Promise<Knex> {
  if (filename !== ":memory:") mkdirSync(path.dirname(filename), { recursive: true });
  const db = knex({
    client: "sqlite3",
    connection: { filename },
    useNullAsDefault: true,
    // SQLite takes one writer at a time; one connection per process keeps ":memory:" a single
    // database and turns contention between replicas into busy_timeout waits.
    pool: {
      min: 1,
      max: 1,
      afterCreate(
        connection: { exec(sql: string, done: (error: Error | null) => void): void },
        done: (error: Error | null, connection: unknown) => void,
      ) {
        connection.exec(
          "PRAGMA journal_mode = WAL; PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = NORMAL;",
          (error) => done(error, connection),
        );
      },
    },
  });
  const migrationSource = {
    getMigrations: async () => migrations,
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

/** True when a write broke a UNIQUE or PRIMARY KEY constraint. */
export function isUniqueViolation(error: unknown): boolean {
  return error instanceof Error && /SQLITE_CONSTRAINT: (UNIQUE|PRIMARY KEY)/.test(error.message);
}
