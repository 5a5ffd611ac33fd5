// The middleware chains of served and outgoing calls, in one place: the kit's own concerns are
// middleware like any other. docs/architecture.md says what each link does, in this order.
import type { WalSync } from "../db/wal-sync.js";
import type { Logger } from "../observability/logger.js";
import type { Metrics } from "../observability/metrics.js";
import { type AuthOptions, authServer, forwardCredentials } from "./auth.js";
import { cancelledWith, deadlineClient, deadlineServer } from "./deadline.js";
import { durableAnswers } from "./durable-answers.js";
import { logging } from "./logging.js";
import { metricsClient, metricsServer } from "./metrics.js";
import type { PagesInFlight } from "./pages.js";
import { statusMapping } from "./status.js";
import { streamsPerCaller } from "./streams.js";
import { tracingClient, tracingServer } from "./tracing.js";
import type { ClientMiddleware, ServerMiddleware } from "./types.js";
import { xRequestIdClient, xRequestIdServer } from "./x-request-id.js";

export { cancelledWith } from "./deadline.js";
export * from "./types.js";
export { outliving, X_REQUEST_ID } from "./x-request-id.js";

/** What every served call goes through, outermost first: a server without a service's extras. */
export function defaultServerMiddleware(logger: Logger): ServerMiddleware[] {
  return [logging(logger), statusMapping, xRequestIdServer, deadlineServer];
}

/** What every outgoing call goes through, outermost first: a client outside a service. */
export function defaultClientMiddleware(options: { defaultTimeoutMs: number }): ClientMiddleware[] {
  return [deadlineClient(options.defaultTimeoutMs), xRequestIdClient];
}

/** What a service's chains observe: spans when `tracing`, and counts into `metrics` when given. */
export interface Observed {
  tracing: boolean;
  metrics?: Metrics;
}

/** A service's served calls (startService), outermost first. */
export function serviceServerChain(
  options: Observed & {
    logger: Logger;
    auth: AuthOptions;
    maxStreamsPerCaller: number;
    pages: ServerMiddleware & PagesInFlight;
    /** An SQLite file's WAL sync that answers wait for (SHOP_SQLITE_SYNC=before-reply). */
    wal?: WalSync;
    /** The service's own, innermost. */
    extra?: readonly ServerMiddleware[];
  },
): ServerMiddleware[] {
  return [
    ...(options.tracing ? [tracingServer] : []),
    ...(options.metrics ? [metricsServer(options.metrics)] : []),
    ...defaultServerMiddleware(options.logger),
    authServer(options.auth),
    streamsPerCaller(options.maxStreamsPerCaller),
    options.pages,
    ...(options.wal ? [durableAnswers(options.wal)] : []),
    ...(options.extra ?? []),
  ];
}

/** A service's calls to its dependencies (startService), outermost first. */
export function serviceClientChain(
  options: Observed & {
    defaultTimeoutMs: number;
    /** Aborted as a shutdown's grace period ends, with the error a cut call fails with. */
    graceOver: AbortSignal;
    /** The service's own, innermost. */
    extra?: readonly ClientMiddleware[];
  },
): ClientMiddleware[] {
  return [
    ...(options.tracing ? [tracingClient] : []),
    ...(options.metrics ? [metricsClient(options.metrics)] : []),
    ...defaultClientMiddleware(options),
    cancelledWith(options.graceOver),
    forwardCredentials,
    ...(options.extra ?? []),
  ];
}
