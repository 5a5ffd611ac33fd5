import { channelTarget, createClient } from "./client/index.js";
import {
  databaseVariable,
  env,
  hostPort,
  type ServerConfig,
  SettingError,
  serverConfig,
} from "./config.js";
import { serviceNameOf } from "./contract.js";
import {
  closeToNewWork,
  describeLocation,
  type Knex,
  observeDatabase,
  openDatabase,
  openReads,
  walSyncOf,
} from "./db/index.js";
import { databaseTracing } from "./db/tracing.js";
import { ShuttingDown } from "./errors.js";
import { canCompactHeap, compactHeap, compactWhenQuiet } from "./heap.js";
import {
  type ClientMiddleware,
  type ServerMiddleware,
  serviceClientChain,
  serviceServerChain,
} from "./middleware/index.js";
import { unknownMethods } from "./middleware/metrics.js";
import { pagesInFlight } from "./middleware/pages.js";
import { createLogger, flushLogger, type Logger, logGrpcJsTo } from "./observability/logger.js";
import {
  backgroundTask,
  databaseMetrics,
  Metrics,
  type MetricsEndpoint,
  pagesMetrics,
  serveMetrics,
  walSyncMetrics,
} from "./observability/metrics.js";
import { startTracing, type Tracing } from "./observability/tracing.js";
import {
  metricsPortFor,
  type RegisteredService,
  type ServiceRegistry,
  serviceVariable,
} from "./registry.js";
import { TokenVerifier } from "./security/auth.js";
import { checkBinding, type SecurityConfig, securityFromEnv } from "./security/security.js";
import { channelCredentials } from "./security/tls.js";
import { ListenError, type RunningServer, serve } from "./server.js";
import { type AnyServiceModule, accessRules, type ServiceImplementation } from "./service.js";

export interface StartOptions extends Partial<ServerConfig> {
  logger?: Logger;
  /** The address of each service it calls, by client name; every dependency needs one. */
  dependencies?: Record<string, string>;
  /** Deadline of a call to a dependency when the caller's is later or absent. */
  dependencyTimeoutMs?: number;
  /** Middleware every served call goes through after the kit's defaults. */
  middleware?: readonly ServerMiddleware[];
  /** Runs just before the service's port opens (ServeOptions.beforeListen). */
  beforeListen?: () => void;
  /** Middleware every call to a dependency goes through after the kit's defaults. */
  clientMiddleware?: readonly ClientMiddleware[];
  /**
   * The registered service behind each dependency, by client name: the identity its certificate
   * must prove over mutual TLS, whatever address it is dialled by.
   */
  dependencyIdentities?: Record<string, string>;
  /**
   * The mesh's internal proto services, its own and others' (ServiceRegistry.internalServices):
   * its reflection shows them only to mesh identities.
   */
  internalServices?: readonly string[];
  /**
   * The mesh's public proto services (ServiceRegistry.publicServices): what its reflection lists
   * to calls through the edge. Its own public services when absent.
   */
  publicServices?: readonly string[];
  /** Profile, TLS identity and JWT settings; from SHOP_* variables (securityFromEnv) by default. */
  security?: SecurityConfig;
  /**
   * Prometheus metrics: counted by default (StartedService.metrics), served over HTTP on
   * `host:port` when a port is given (0 picks a free one), and not at all with false.
   */
  metrics?: { port?: number } | false;
  /**
   * A span per served and outgoing call, and trace ids in the log lines; true by default. The
   * process's OpenTelemetry SDK (startTracing) decides what is recorded and exported.
   */
  tracing?: boolean;
}

/** startService could not open or migrate the service's database. */
export class DatabaseOpenError extends Error {}

export interface StartedService {
  server: RunningServer;
  db: Knex;
  logger: Logger;
  /** Its metrics; an empty registry when StartOptions.metrics is false. */
  metrics: Metrics;
  /** Where its metrics are served, when they are. */
  metricsEndpoint?: MetricsEndpoint;
  /** Graceful shutdown, then background work stops, clients close and the database closes. */
  stop(): Promise<void>;
}

/** Opens the database, migrates it, connects the dependencies and serves. Tests use port 0. */
export async function startService(
  module: AnyServiceModule,
  options: StartOptions = {},
): Promise<StartedService> {
  const config = { ...serverConfig(module.name, 0), ...options };
  const security = options.security ?? securityFromEnv();
  checkBinding(security, config.host);
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
    extra: options.clientMiddleware,
  });
  const clients: Record<string, ReturnType<typeof createClient>> = {};
  for (const [name, definition] of Object.entries(module.dependencies)) {
    const address = options.dependencies?.[name];
    if (!address) throw new Error(`${module.name}: no address for its dependency "${name}"`);
    // One long-lived channel per dependency, balanced over its replicas; its retry and hedging
    // policies come from the contract.
    clients[name] = createClient(definition as never, address, {
      middleware: clientMiddleware,
      direct: true,
      transport: channelCredentials(security.tls, options.dependencyIdentities?.[name]),
    });
  }
  const closeClients = () => {
    for (const client of Object.values(clients)) client.close();
  };
  let db: Knex;
  let metricsEndpoint: MetricsEndpoint | undefined;
  try {
    db = await openDatabase(config.database, module.migrations, { schema: module.name, logger });
  } catch (error) {
    closeClients();
    // A malformed setting says so itself; the database was never tried.
    if (error instanceof SettingError) throw error;
    throw new DatabaseOpenError(
      `cannot open ${describeLocation(config.database)}: ${(error as Error).message}`,
    );
  }
  const reads = openReads(db);
  const observers = [
    ...(counting ? [databaseMetrics(metrics)] : []),
    ...(tracing ? [databaseTracing(db)] : []),
  ];
  for (const handle of new Set([db, reads])) {
    for (const observer of observers) observeDatabase(handle, observer);
  }
  const closeDatabase = async () => {
    if (reads !== db) await reads.destroy();
    await db.destroy();
  };
  const implementation = module.implement({
    db,
    reads,
    logger,
    clients,
    dependencyTimeoutMs,
    metrics,
  });
  const services: ServiceImplementation[] = Object.entries(module.serves).map(
    ([key, definition]) => ({
      definition: definition as never,
      handlers: implementation.handlers[key] as never,
    }),
  );
  const wal = walSyncOf(config.database, config.sqliteSync);
  if (wal && counting) walSyncMetrics(metrics, wal);
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
        extra: options.middleware,
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
      metricsEndpoint = await serveMetrics(metrics, config.host, metricsPort).catch(
        async (error: unknown) => {
          await server.shutdown();
          throw new ListenError("metrics", hostPort(config.host, metricsPort), error);
        },
      );
    }
  } catch (error) {
    await implementation.close?.();
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
        await implementation.close?.();
        closeClients();
        await wal?.close();
        await closeDatabase();
        await metricsEndpoint?.close();
      })();
      return stopped;
    },
  };
}

/**
 * The addresses of the services `name` calls: SHOP_<DEPENDENCY>_ADDR, else the dependency's
 * default port on 127.0.0.1.
 */
export function dependencyAddresses(registry: ServiceRegistry, name: string) {
  const service = registry.get(name);
  return Object.fromEntries(
    Object.entries(service.clients).map(([client, dependency]) => {
      const variable = serviceVariable(dependency, "ADDR");
      const address = env.string(variable, `127.0.0.1:${registry.get(dependency).port}`);
      return [client, checkedAddress(variable, address)];
    }),
  );
}

/**
 * A dependency's address as channelTarget takes it: each `host:port` with a port of 1 to 65535
 * and an IPv6 host in brackets, or a unix socket, which grpc-js reads.
 */
function checkedAddress(variable: string, address: string): string {
  if (/^unix(-abstract)?:/i.test(address)) return address;
  const endpoints = address.replace(/^(dns:(\/\/[^/]*\/)?|ipv4:|ipv6:)/i, "").split(",");
  const valid = endpoints.every((endpoint) => {
    const [, host = "", port] = /^(.+):(\d{1,5})$/.exec(endpoint.trim()) ?? [];
    const bracketed = /^\[[0-9a-f:.]+\]$/i.test(host);
    // Anything else with a colon or a slash is a scheme grpc-js cannot dial (http://…) or an
    // IPv6 address without its brackets.
    if (!bracketed && /[:/]/.test(host)) return false;
    return port !== undefined && Number(port) >= 1 && Number(port) <= 65_535;
  });
  if (!valid) {
    throw new Error(
      `${variable} must be host:port, ip:port,ip:port or dns:///name:port, got "${address}"`,
    );
  }
  try {
    channelTarget(address);
  } catch (error) {
    throw new Error(`${variable}: ${(error as Error).message}`);
  }
  return address;
}

/** The setting that chose the address a ListenError names. */
function listenVariable(error: ListenError): string {
  if (error.message.includes("EADDRNOTAVAIL")) return "SHOP_HOST";
  const ports = { grpc: "SHOP_PORT", health: "SHOP_HEALTH_PORT", metrics: "SHOP_METRICS_PORT" };
  return ports[error.listener];
}

/** SHOP_METRICS_PORT, else the port the registry's offset gives: derived only when unset. */
function metricsPort(registered: RegisteredService, grpcPort: number): number {
  if (env.string("SHOP_METRICS_PORT", "") === "") return metricsPortFor(registered, grpcPort);
  return env.port("SHOP_METRICS_PORT", 0);
}

/**
 * A service process's heap is compacted at the end of any 30 s in which its event loop was busy
 * under 1% of the time, if V8's heap grew by 8 MB (the young generation's cap) since the last
 * compaction: a burst of calls leaves it at its peak otherwise (kit/heap.ts).
 */
const QUIET_COMPACTION = { everyMs: 30_000, quietBelow: 0.01, growthBytes: 8 * 2 ** 20 };

/**
 * A service process: start the registered service `name` from SHOP_* settings, tell the launcher
 * that started it (if any) where it serves, and stop gracefully on SIGTERM or SIGINT.
 */
export async function runService(registry: ServiceRegistry, name: string): Promise<void> {
  if (!(registry.names as string[]).includes(name)) {
    const names = registry.names.join(", ");
    console.error(`the first argument, else SHOP_SERVICE, must be one of ${names}, got "${name}"`);
    process.exit(1);
  }
  // Until it serves, a process stopped by a signal or orphaned by its launcher exits at once:
  // nothing is in flight, and a migration cut short rolls back. Without a handler, Node as a
  // container's PID 1 ignores SIGTERM, so a pod still migrating took its whole grace to stop.
  const stopStarting = (signal: string) => {
    console.error(`${name}: ${signal} before serving: stopped`);
    process.exit(0);
  };
  const orphaned = () => stopStarting("launcher gone");
  process.on("SIGTERM", stopStarting);
  process.on("SIGINT", stopStarting);
  if (process.send) process.once("disconnect", orphaned);
  let service: StartedService;
  let tracing: Tracing;
  let compactMs: number | undefined;
  try {
    tracing = await startTracing(name);
    const registered = registry.get(name);
    const config = serverConfig(name, registered.port);
    const logger = createLogger(name, config.logLevel);
    logGrpcJsTo(logger);
    const metrics = env.bool("SHOP_METRICS", true)
      ? { port: metricsPort(registered, config.port) }
      : false;
    service = await startService(registered.module, {
      logger,
      ...config,
      dependencies: dependencyAddresses(registry, name),
      dependencyIdentities: { ...registered.clients },
      internalServices: registry.internalServices,
      metrics,
      tracing: tracing.enabled,
      publicServices: registry.publicServices,
      // Before the port opens, not after: a first call must not wait for it (60–75 ms).
      beforeListen: () => {
        compactMs = compactHeap();
      },
    });
    if (metrics) service.metrics.collectProcessMetrics();
  } catch (error) {
    const named =
      error instanceof DatabaseOpenError
        ? `${databaseVariable(name)}: `
        : error instanceof ListenError
          ? `${listenVariable(error)}: `
          : "";
    console.error(`${name}: failed to start: ${named}${(error as Error).message}`);
    process.exit(1);
  }
  // Compactions count as a background task: how often and how long, beside the logs.
  const compactions = canCompactHeap()
    ? backgroundTask(service.metrics, "heap_compaction")
    : undefined;
  if (compactMs !== undefined) compactions?.ran(compactMs / 1000, false);
  const metricsAddress = service.metricsEndpoint?.address;
  service.logger.info(
    {
      address: service.server.address,
      health_port: service.server.healthPort,
      metrics: metricsAddress,
      tracing: tracing.exporting,
      ...(compactMs !== undefined && { heap_compact_ms: Math.round(compactMs) }),
    },
    "serving",
  );
  // A launcher waits for this, so it never takes another process on the port for this one.
  process.send?.({ serving: service.server.address, metrics: metricsAddress, pid: process.pid });
  const stopCompacting = compactWhenQuiet({
    ...QUIET_COMPACTION,
    onCompact: ({ ms, heapBefore, heapAfter }) => {
      compactions?.ran(ms / 1000, false);
      service.logger.info(
        {
          heap_compact_ms: Math.round(ms),
          heap_bytes_before: heapBefore,
          heap_bytes_after: heapAfter,
        },
        "heap compacted after the calls quietened",
      );
    },
  });
  let stopping = false;
  const stop = async (signal: string) => {
    // Another signal while the calls in flight finish (a second Ctrl-C, an orchestrator's
    // repeat) changes nothing: SIGKILL is the way to stop at once.
    if (stopping) {
      service.logger.info({ signal }, "already shutting down");
      return;
    }
    stopping = true;
    stopCompacting();
    service.logger.info({ signal }, "shutting down");
    await service.stop();
    await exportLastSpans(tracing, service.logger);
    service.logger.info("stopped");
    await flushLogger(service.logger);
    process.exit(0);
  };
  process.off("SIGTERM", stopStarting);
  process.off("SIGINT", stopStarting);
  process.off("disconnect", orphaned);
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
  // The launcher is gone (even by SIGKILL): stop rather than serve on as an orphan.
  if (process.send) process.once("disconnect", () => stop("disconnect"));
}

/**
 * How long a stopping process waits for its last spans to be exported. A collector that does not
 * answer would hold it for the exporter's own 10 s, past what an orchestrator leaves after the
 * grace period (deploy/kubernetes TERMINATION_GRACE_S leaves 5 s after it for all of this).
 */
const LAST_SPANS_MS = 3_000;

async function exportLastSpans(tracing: { shutdown(): Promise<void> }, logger: Logger) {
  const exported = tracing.shutdown().then(
    () => true,
    (error: unknown) => {
      logger.warn({ err: error }, "could not export the last spans");
      return true;
    },
  );
  const waited = new Promise<false>((resolve) => setTimeout(resolve, LAST_SPANS_MS, false));
  if (!(await Promise.race([exported, waited]))) {
    logger.warn({ waited_ms: LAST_SPANS_MS }, "gave up exporting the last spans");
  }
}
