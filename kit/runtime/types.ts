import type { ServerConfig } from "../config.js";
import type { Knex } from "../db/index.js";
import type { ClientMiddleware, ServerMiddleware } from "../middleware/index.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics, MetricsEndpoint } from "../observability/metrics.js";
import type { SecurityConfig } from "../security/security.js";
import type { RunningServer } from "../server.js";

export interface StartOptions extends Partial<ServerConfig> {
  logger?: Logger;
  /** The address of each service it calls, by client name; every dependency needs one. */
  dependencies?: Record<string, string>;
  /** Deadline of a call to a dependency when the caller's is later or absent. */
  dependencyTimeoutMs?: number;
  /** Middleware every served call goes through after the kit's defaults and the module's own. */
  middleware?: readonly ServerMiddleware[];
  /** Runs just before the service's port opens (ServeOptions.beforeListen). */
  beforeListen?: () => void;
  /** Middleware every call to a dependency goes through after the kit's and the module's own. */
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
