import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import {
  Counter,
  type CounterConfiguration,
  collectDefaultMetrics,
  Gauge,
  type GaugeConfiguration,
  Histogram,
  type HistogramConfiguration,
  Registry,
} from "prom-client";
import { bareHost, hostPort } from "../config.js";
import { type DatabaseObserver, isBusy, isConnectionLost, isFull } from "../db/index.js";
import type { WalSync } from "../db/wal-sync.js";
import type { PagesInFlight } from "../middleware/pages.js";
import type { RunObserver } from "../repeat.js";

/**
 * Latency buckets, in seconds: Prometheus's default buckets (which go-grpc-prometheus uses)
 * with finer steps below 5 ms, where a shopmesh rpc usually answers.
 */
export const LATENCY_BUCKETS = [
  0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
];

/**
 * One service's metrics: a registry of its own, so services sharing a process (the tests'
 * fleets) never mix their numbers, served as Prometheus text on the service's metrics port
 * (serveMetrics). The kit registers the gRPC, store and process metrics; a service adds its
 * business metrics with counter(), gauge() and histogram().
 */
export class Metrics {
  readonly registry = new Registry();

  /** Node's process metrics (CPU, memory, event loop lag, GC): once per process is enough. */
  collectProcessMetrics(): void {
    collectDefaultMetrics({ register: this.registry });
  }

  counter<L extends string>(config: Omit<CounterConfiguration<L>, "registers">): Counter<L> {
    return new Counter({ ...config, registers: [this.registry] });
  }

  gauge<L extends string>(config: Omit<GaugeConfiguration<L>, "registers">): Gauge<L> {
    return new Gauge({ ...config, registers: [this.registry] });
  }

  histogram<L extends string>(config: Omit<HistogramConfiguration<L>, "registers">): Histogram<L> {
    return new Histogram({ buckets: LATENCY_BUCKETS, ...config, registers: [this.registry] });
  }

  /** The metric `name`, made on first use: metrics the kit registers only when something uses them. */
  shared<M>(name: string, make: () => M): M {
    const existing = this.made.get(name);
    if (existing !== undefined) return existing as M;
    const metric = make();
    this.made.set(name, metric);
    return metric;
  }

  private readonly made = new Map<string, unknown>();

  /** The text a scrape gets. */
  text(): Promise<string> {
    return this.registry.metrics();
  }
}

/**
 * The list calls the pages middleware holds, read at each scrape:
 * `shop_pages_in_flight{state="serving"|"waiting"}`. Calls that often wait mean the bound
 * (SHOP_MAX_PAGES_IN_FLIGHT) is below what this process's memory could take, or its callers
 * read slowly.
 */
export function pagesMetrics(metrics: Metrics, pages: PagesInFlight): void {
  metrics.gauge({
    name: "shop_pages_in_flight",
    help: "List calls being served until their page is written out (serving), and those waiting their turn.",
    labelNames: ["state"],
    collect() {
      this.set({ state: "serving" }, pages.serving);
      this.set({ state: "waiting" }, pages.waiting);
    },
  });
}

/**
 * `shop_tls_certificate_expiry_timestamp_seconds{certificate="identity"|"ca"}`: when this
 * process's mesh certificate, and the first to expire of its CA bundle's, expire. The files are
 * read at start, so renewed ones take a restart (rules.yml alerts two weeks ahead).
 */
export function certificateMetrics(metrics: Metrics, expiries: { identity: number; ca: number }) {
  const gauge = metrics.gauge({
    name: "shop_tls_certificate_expiry_timestamp_seconds",
    help: "When this process's mesh certificate (identity) and the first to expire of its CA bundle's (ca) expire, in seconds since the epoch.",
    labelNames: ["certificate"],
  });
  gauge.set({ certificate: "identity" }, expiries.identity / 1000);
  gauge.set({ certificate: "ca" }, expiries.ca / 1000);
}

/** `shop_sqlite_wal_syncs_total`: fsyncs of the SQLite WAL that answers waited for. */
export function walSyncMetrics(metrics: Metrics, wal: WalSync): void {
  metrics.counter({
    name: "shop_sqlite_wal_syncs_total",
    help: "fsyncs of the SQLite WAL that answers waited for: every write rpc's, and a read's or a stream message's while a commit was not yet on disk; each covers every commit made before it began.",
    collect() {
      this.reset();
      this.inc(wal.syncs);
    },
  });
}

/**
 * Runs and failures of a background task, e.g. the product service's reservation sweep:
 * `shop_background_runs_total{task}`, `shop_background_failures_total{task}` and
 * `shop_background_run_seconds{task}`.
 */
export function backgroundTask(metrics: Metrics, task: string): RunObserver {
  const runs = metrics.shared("runs", () =>
    metrics.counter({
      name: "shop_background_runs_total",
      help: "Runs of a background task (the reservation sweep, the order reconciler), failed or not.",
      labelNames: ["task"],
    }),
  );
  const failures = metrics.shared("failures", () =>
    metrics.counter({
      name: "shop_background_failures_total",
      help: "Runs of a background task that failed as a whole.",
      labelNames: ["task"],
    }),
  );
  const seconds = metrics.shared("run seconds", () =>
    metrics.histogram({
      name: "shop_background_run_seconds",
      help: "How long one run of a background task took.",
      labelNames: ["task"],
    }),
  );
  const labels = { task };
  // Present from the start, so a rate is defined before the first failure.
  runs.inc(labels, 0);
  failures.inc(labels, 0);
  return {
    ran(duration, failed) {
      runs.inc(labels);
      if (failed) failures.inc(labels);
      seconds.observe(labels, duration);
    },
  };
}

/**
 * The store's metrics, through the database's observer hook (kit/db/index.ts), on every engine:
 * statement and transaction durations by operation, and statements the database could not take
 * now (kit/db/index.ts isBusy): on SQLite, a lock held by another connection past busy_timeout (a
 * shorter wait shows in the duration); on PostgreSQL, a serialization failure or deadlock, or a
 * lock or statement timeout.
 */
export function databaseMetrics(metrics: Metrics): DatabaseObserver {
  const statements = metrics.histogram({
    name: "shop_db_query_seconds",
    help: "Duration of one SQL statement, lock waits included, by verb and first table.",
    labelNames: ["operation", "table"],
  });
  const transactions = metrics.histogram({
    name: "shop_db_transaction_seconds",
    help: "Duration of one transaction, from BEGIN to COMMIT or ROLLBACK, by its first statement.",
    labelNames: ["operation", "outcome"],
  });
  const busy = metrics.counter({
    name: "shop_db_busy_total",
    help: "Statements the database could not take now: SQLite busy past busy_timeout; PostgreSQL serialization failures, deadlocks, lock and statement timeouts.",
    labelNames: ["operation", "table"],
  });
  // The kinds a client's code cannot tell apart from its own mistakes (a full disk is
  // RESOURCE_EXHAUSTED, a lost connection ABORTED or UNAVAILABLE): the alerts read them here.
  const failed = metrics.counter({
    name: "shop_db_errors_total",
    help: "Statements that failed, by kind: busy (as shop_db_busy_total), lost (the connection went under it), full (no room for a write), other.",
    labelNames: ["kind"],
  });
  for (const kind of ["busy", "lost", "full", "other"]) failed.inc({ kind }, 0);
  return {
    statement({ operation, table, seconds, error }) {
      const labels = { operation, table };
      statements.observe(labels, seconds);
      if (error === undefined) return;
      const busyNow = isBusy(error);
      if (busyNow) busy.inc(labels);
      const kind = busyNow
        ? "busy"
        : isConnectionLost(error)
          ? "lost"
          : isFull(error)
            ? "full"
            : "other";
      failed.inc({ kind });
    },
    async transaction(run, info) {
      const start = performance.now();
      let outcome = "rollback";
      try {
        const result = await run();
        outcome = "commit";
        return result;
      } finally {
        transactions.observe(
          { operation: info.first, outcome },
          (performance.now() - start) / 1000,
        );
      }
    },
  };
}

export interface MetricsEndpoint {
  readonly port: number;
  /** host:port to scrape. */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * Serves `metrics` over HTTP: GET /metrics is the Prometheus text; anything else is 404. Binds
 * like the gRPC port (127.0.0.1 by default); port 0 picks a free one. A scrape that fails (a
 * gauge's read of the store, say) is a bare 500, and its error goes to `onError`, not to the
 * scraper: it may name the database.
 */
export async function serveMetrics(
  metrics: Metrics,
  host: string,
  port: number,
  onError: (error: unknown) => void,
): Promise<MetricsEndpoint> {
  const server: Server = createServer((request, response) => {
    if (request.method !== "GET" || request.url?.split("?")[0] !== "/metrics") {
      response.writeHead(404, { "content-type": "text/plain" }).end("not found; try /metrics\n");
      return;
    }
    metrics.text().then(
      (text) => response.writeHead(200, { "content-type": metrics.registry.contentType }).end(text),
      (error: unknown) => {
        try {
          onError(error);
        } finally {
          response
            .writeHead(500, { "content-type": "text/plain" })
            .end("the metrics could not be read; the service's log says why\n");
        }
      },
    );
  });
  // A scraper keeps its connection; a shutdown must not wait for it.
  server.keepAliveTimeout = 65_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, bareHost(host), () => {
      server.off("error", reject);
      resolve();
    });
  });
  const bound = (server.address() as AddressInfo).port;
  return {
    port: bound,
    address: hostPort(host, bound),
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
