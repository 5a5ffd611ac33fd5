import { databaseVariable, env, serverConfig } from "../config.js";
import { canCompactHeap, compactHeap, compactWhenQuiet } from "../heap.js";
import { createLogger, flushLogger, type Logger, logGrpcJsTo } from "../observability/logger.js";
import { backgroundTask } from "../observability/metrics.js";
import { startTracing, type Tracing } from "../observability/tracing.js";
import { metricsPortFor, type RegisteredService, type ServiceRegistry } from "../registry.js";
import { ListenError } from "../server.js";
import { unknownSettingMessage, unknownSettings } from "../settings.js";
import { DatabaseOpenError } from "./database.js";
import { dependencyAddresses } from "./dependencies.js";
import { startService } from "./start.js";
import type { StartedService } from "./types.js";

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
    for (const unknown of unknownSettings(process.env, registry.names, registry.settings)) {
      logger.warn({ setting: unknown.name }, unknownSettingMessage(unknown));
    }
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
