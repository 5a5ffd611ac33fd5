import { SettingError } from "../config.js";
import { type Knex, observeDatabase, openDatabase, openFailure, openReads } from "../db/index.js";
import { databaseTracing } from "../db/tracing.js";
import type { Observed } from "../middleware/index.js";
import type { Logger } from "../observability/logger.js";
import { databaseMetrics } from "../observability/metrics.js";
import type { AnyServiceModule } from "../service.js";

/** startService could not open or migrate the service's database. */
export class DatabaseOpenError extends Error {}

/** Opens and migrates the service's database at `location`. */
export async function openServiceDatabase(
  module: AnyServiceModule,
  location: string,
  logger: Logger,
): Promise<Knex> {
  try {
    return await openDatabase(location, module.migrations, { schema: module.name, logger });
  } catch (error) {
    // A malformed setting says so itself; the database was never tried.
    if (error instanceof SettingError) throw error;
    throw new DatabaseOpenError(openFailure(location, error));
  }
}

/**
 * The handle for reads beside `db` (openReads), both observed for metrics and traces as
 * `observed` says, and how to close the two.
 */
export function readsBeside(db: Knex, observed: Observed) {
  const reads = openReads(db);
  const observers = [
    ...(observed.metrics ? [databaseMetrics(observed.metrics)] : []),
    ...(observed.tracing ? [databaseTracing(db)] : []),
  ];
  for (const handle of new Set([db, reads])) {
    for (const observer of observers) observeDatabase(handle, observer);
  }
  const close = async () => {
    if (reads !== db) await reads.destroy();
    await db.destroy();
  };
  return { reads, close };
}
