import { databaseVariable, env, hostPort, serverConfig } from "../config.js";
import { serviceNameOf } from "../contract.js";
import { closeToNewWork, type Knex, walSyncOf } from "../db/index.js";
import { ShuttingDown } from "../errors.js";
import { serviceClientChain, serviceServerChain } from "../middleware/index.js";
import { unknownMethods } from "../middleware/metrics.js";
import { pagesInFlight } from "../middleware/pages.js";
import { createLogger } from "../observability/logger.js";
import {
  backgroundTask,
  certificateMetrics,
  Metrics,
  type MetricsEndpoint,
  pagesMetrics,
  serveMetrics,
  walSyncMetrics,
} from "../observability/metrics.js";
import { repeat } from "../repeat.js";
import { TokenVerifier } from "../security/auth.js";
import {
  certificateExpiries,
  checkBinding,
  checkDatabaseTransport,
  securityFromEnv,
} from "../security/security.js";
import { ListenError, type RunningServer, serve } from "../server.js";
import { type AnyServiceModule, accessRules, type ServiceImplementation } from "../service.js";
import { openServiceDatabase, readsBeside } from "./database.js";
import { dependencyClients } from "./dependencies.js";
import type { StartedService, StartOptions } from "./types.js";

/** Opens the database, migrates it, connects the dependencies and serves. Tests use port 0. */
export async function startService(
  module: AnyServiceModule,
  options: StartOptions = {},
): Promise<StartedService> {
  const config = { ...serverConfig(module.name, 0), ...options };
  const security = options.security ?? securityFromEnv();
  checkBinding(security, config.host);
  checkDatabaseTransport(security.profile, config.database, databaseVariable(module.name));
  const logger = options.logger ?? createLogger(module.name, config.logLevel);
  const metrics = new Metrics();
  const counting = options.metrics !== false;
  const tracing = options.tracing !== false;
  const dependencyTimeoutMs =
    options.dependencyTimeoutMs ?? env.ms("SHOP_DEPENDENCY_TIMEOUT_MS", 5_000, 1);
  // Aborted as a shutdown's grace period ends: a call still waiting on a dependency then stops
  // waiting, and answers before the calls left are cut (onGraceEnd below).
  const graceOver = new AbortController();
  const observed = { tracing, ...(counting && { metrics }) };
  const clientMiddleware = serviceClientChain({
    ...observed,
    defaultTimeoutMs: dependencyTimeoutMs,
    graceOver: graceOver.signal,
    extra: [...(module.middleware?.calls ?? []), ...(options.clientMiddleware ?? [])],
  });
  const clients = dependencyClients(module, options, security.tls, clientMiddleware);
  const closeClients = () => {
    for (const client of Object.values(clients)) client.close();
  };
  let db: Knex;
  let metricsEndpoint: MetricsEndpoint | undefined;
  try {
    db = await openServiceDatabase(module, config.database, logger);
  } catch (error) {
    closeClients();
    throw error;
  }
  const { reads, close: closeDatabase } = readsBeside(db, observed);
  const implementation = module.implement({
    db,
    reads,
    logger,
    clients,
    dependencyTimeoutMs,
    metrics,
  });
  // Started with the service, stopped before it closes: a run in progress ends first.
  const tasks = (implementation.background ?? []).map((task) =>
    repeat(
      task.everyMs,
      () => task.run(),
      (error) =>
        logger.warn({ err: error, task: task.name }, "background task failed; will run again"),
      backgroundTask(metrics, task.name),
    ),
  );
  const closeImplementation = async () => {
    await Promise.all(tasks.map((task) => task.stop()));
    await implementation.close?.();
  };
  const services: ServiceImplementation[] = Object.entries(module.serves).map(
    ([key, definition]) => ({
      definition: definition as never,
      handlers: implementation.handlers[key] as never,
    }),
  );
  const wal = walSyncOf(config.database, config.sqliteSync);
  if (wal && counting) walSyncMetrics(metrics, wal);
  if (security.tls && counting) certificateMetrics(metrics, certificateExpiries(security.tls));
  const pages = pagesInFlight(config.maxPagesInFlight, config.pageWriteTimeoutMs);
  if (counting) pagesMetrics(metrics, pages);
  let server: RunningServer;
  try {
    server = await serve(services, {
      host: config.host,
      port: config.port,
      logger,
      shutdownGraceMs: config.shutdownGraceMs,
      shutdownAnnounceMs: config.shutdownAnnounceMs,
      // The calls still running as the grace ends write nothing more and wait for no dependency:
      // they answer before the cut, with what they know (an order placed but not settled, say).
      // The database closes first, so a cancelled dependency call cannot fail its order either.
      onGraceEnd: () => {
        closeToNewWork(db);
        pages.shutDown();
        // A dependency call cut here fails with this, not a CANCELLED its caller would take
        // for its own, which neither Envoy nor grpc clients retry.
        graceOver.abort(new ShuttingDown());
      },
      maxConnectionAgeMs: config.maxConnectionAgeMs,
      maxConnectionAgeGraceMs: config.maxConnectionAgeGraceMs,
      ...(config.healthPort !== undefined && { healthPort: config.healthPort }),
      ...(options.beforeListen && { beforeListen: options.beforeListen }),
      middleware: serviceServerChain({
        ...observed,
        logger,
        auth: {
          rules: accessRules(module),
          verifier: new TokenVerifier(security.jwt),
          mtls: security.tls !== undefined,
        },
        maxStreamsPerCaller: config.maxStreamsPerCaller,
        pages,
        ...(wal && { wal }),
        extra: [...(module.middleware?.served ?? []), ...(options.middleware ?? [])],
      }),
      ...(counting && {
        onUnknownMethod: unknownMethods(
          metrics,
          services.map((service) => serviceNameOf(service.definition)),
        ),
      }),
      tls: security.tls,
      internalServices: options.internalServices,
      publicServices: options.publicServices,
    });
    const metricsPort = options.metrics ? options.metrics.port : undefined;
    if (metricsPort !== undefined) {
      const failedScrape = (error: unknown) =>
        logger.error({ err: error }, "a metrics scrape failed");
      metricsEndpoint = await serveMetrics(metrics, config.host, metricsPort, failedScrape).catch(
        async (error: unknown) => {
          await server.shutdown();
          throw new ListenError("metrics", hostPort(config.host, metricsPort), error);
        },
      );
    }
  } catch (error) {
    await closeImplementation();
    closeClients();
    await wal?.close();
    await closeDatabase();
    throw error;
  }
  let stopped: Promise<void> | undefined;
  return {
    server,
    db,
    logger,
    metrics,
    ...(metricsEndpoint && { metricsEndpoint }),
    stop() {
      stopped ??= (async () => {
        await server.shutdown();
        await closeImplementation();
        closeClients();
        await wal?.close();
        await closeDatabase();
        await metricsEndpoint?.close();
      })();
      return stopped;
    },
  };
}
