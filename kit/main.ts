import { type ServerConfig, serverConfig } from "./config.js";
import { type Knex, type Migration, openDatabase } from "./db.js";
import { createLogger, type Logger } from "./logger.js";
import { type RunningServer, serve } from "./server.js";
import type { ServiceImplementation } from "./service.js";

/** What a service folder exports: how to migrate its database and build its handlers. */
export interface ServiceModule {
  /** Short name: "user", "product", "order". Names the database file and the log lines. */
  name: string;
  defaultPort: number;
  migrations: Migration[];
  implement(db: Knex, logger: Logger): ServiceImplementation & { close?(): Promise<void> };
}

export interface StartedService {
  server: RunningServer;
  db: Knex;
  logger: Logger;
  /** Graceful shutdown, then the database closes. */
  stop(): Promise<void>;
}

/** Opens the database, migrates it, and serves the module. Tests call it with port 0. */
export async function startService(
  module: ServiceModule,
  overrides: Partial<ServerConfig> & { logger?: Logger } = {},
): Promise<StartedService> {
  const config = { ...serverConfig(module.name, module.defaultPort), ...overrides };
  const logger = overrides.logger ?? createLogger(module.name, config.logLevel);
  const db = await openDatabase(config.database, module.migrations);
  const implementation = module.implement(db, logger);
  const server = await serve(implementation, {
    host: config.host,
    port: config.port,
    logger,
    shutdownGraceMs: config.shutdownGraceMs,
  });
  let stopped: Promise<void> | undefined;
  return {
    server,
    db,
    logger,
    stop() {
      stopped ??= (async () => {
        await server.shutdown();
        await implementation.close?.();
        await db.destroy();
      })();
      return stopped;
    },
  };
}

/** A service process: start, log where it listens, stop gracefully on SIGTERM or SIGINT. */
export async function runService(module: ServiceModule): Promise<void> {
  let service: StartedService;
  try {
    service = await startService(module);
  } catch (error) {
    console.error(`${module.name}: failed to start: ${(error as Error).message}`);
    process.exit(1);
  }
  service.logger.info({ address: service.server.address }, "serving");
  const stop = async (signal: string) => {
    service.logger.info({ signal }, "shutting down");
    await service.stop();
    service.logger.info("stopped");
    process.exit(0);
  };
  process.once("SIGTERM", stop);
  process.once("SIGINT", stop);
}
