// Migrates one service's database before its replicas start: compose's one-shot
// `<service>-migrate` services. (The launchers migrate in process, the same way.)
//
// Replicas that share one SQLite file must not migrate a new file at the same moment: knex creates
// its bookkeeping tables before it takes its migration lock, so the second replica fails with
// "table `knex_migrations` already exists". Once the file is migrated, starting replicas together
// is safe (the lock is a write in one transaction, and SQLite serialises writers). On PostgreSQL
// replicas may start together on a new database: each migrates under an advisory lock.
//
//   SHOP_SERVICE=order node --import tsx scripts/migrate.ts   # SHOP_DATABASE_URL, SHOP_DATABASE …
import { databaseVariable, env, serverConfig } from "../kit/config.js";
import { describeLocation, migrateDatabase, openFailure } from "../kit/db/index.js";
import { checkDatabaseTransport, profileFromEnv } from "../kit/security/security.js";
import { registry } from "../services/registry.js";
import { serviceName } from "./lib/launcher.js";

// A container's PID 1 ignores a signal no handler takes: stop at once, and the migration under
// way rolls back.
for (const signal of ["SIGTERM", "SIGINT"] as const) {
  process.on(signal, () => {
    console.error(`migrate: ${signal}: stopped`);
    process.exit(1);
  });
}

try {
  const service = registry.get(serviceName(env.string("SHOP_SERVICE", "")));
  const { database } = serverConfig(service.name, service.port);
  checkDatabaseTransport(profileFromEnv(), database, databaseVariable(service.name));
  await migrateDatabase(database, service.migrations, { schema: service.name }).catch((error) => {
    // Named as a service's start names it: which variable, and where (without a password).
    throw new Error(`${databaseVariable(service.name)}: ${openFailure(database, error)}`);
  });
  console.log(`${service.name}: ${describeLocation(database)} is migrated`);
} catch (error) {
  console.error(`migrate: ${error instanceof Error ? error.message : error}`);
  process.exitCode = 1;
}
