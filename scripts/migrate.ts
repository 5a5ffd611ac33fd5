// Migrates a service's database before its replicas start.
//
// Replicas that share one SQLite file must not migrate a new file at the same moment: knex creates
// its bookkeeping tables before it takes its migration lock, so the second replica fails with
// "table `knex_migrations` already exists". Once the file is migrated, starting replicas together
// is safe (the lock is a write in one transaction, and SQLite serialises writers). So the mesh
// launcher migrates each database first, and compose runs this file as a one-shot service:
//
//   SHOP_SERVICE=order node --import tsx scripts/lib/migrate.ts   # SHOP_DATABASE / SHOP_DATA_DIR
import path from "node:path";
import { pathToFileURL } from "node:url";
import { env, serverConfig } from "../../kit/config.js";
import { type Migration, openDatabase } from "../../kit/db.js";
import { migrations as orderMigrations } from "../../services/order/migrations/index.js";
import { migrations as productMigrations } from "../../services/product/migrations/index.js";
import { migrations as userMigrations } from "../../services/user/migrations/index.js";
import { type ServiceKind, serviceKind } from "./launcher.js";

const MIGRATIONS: Record<ServiceKind, Migration[]> = {
  user: userMigrations,
  product: productMigrations,
  order: orderMigrations,
};

/** Brings `database` (a SQLite file) to the latest schema of `service`. */
export async function migrateDatabase(service: ServiceKind, database: string): Promise<void> {
  const db = await openDatabase(database, MIGRATIONS[service]);
  await db.destroy();
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  try {
    const service = serviceKind(env.string("SHOP_SERVICE", ""));
    const { database } = serverConfig(service, 0);
    await migrateDatabase(service, database);
    console.log(`${service}: ${database} is migrated`);
  } catch (error) {
    console.error(`migrate: ${error instanceof Error ? error.message : error}`);
    process.exitCode = 1;
  }
}
