// The test fleets, both started in the registry's order, both with typed clients to the services:
// - startFleet: every registered service in this process, on 127.0.0.1:0 with an in-memory
//   database, wired to the services it calls, with faults a test can inject into its rpcs;
// - startProcessFleet: every registered service as its own process (services/main.ts, from the
//   same launch plan as `npm start`) with SQLite files in a temp directory, for tests that kill
//   -9 a process, restart it on its port and file, or run two replicas of a service on one file.
// Both keep their data where the test file's storage says (helpers/storage.ts): on PostgreSQL,
// a fleet gets a database of its own, each service in its schema, shared by its replicas.
// Every start is paired with a teardown, so a failing test never leaves a server running.
// At most six tests of a file run a startFleet fleet at once; the others wait (helpers/turns.ts).
//
//   const fleet = await startFleet(t);                       // user, product, order, …
//   await addUser(fleet.users);                              // scripts/lib/seed.ts
//   fleet.product.faults.set("CommitReservation", { code: Code.UNAVAILABLE });
//
//   const procs = await startProcessFleet(t, { replicas: { order: 2 } });
//   procs.address("order", 1);        // 127.0.0.1:<port of the second order replica>
//   await procs.kill("product");      // SIGKILL, no goodbye
//   await procs.restart("product");   // same port, same file; resolves once it reports SERVING
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import type { ExecutionContext } from "ava";
import { pino } from "pino";
import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { InventoryServiceService } from "../../gen/ts/shop/product/v1/inventory.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { type Client, createClient } from "../../kit/client/index.js";
import type { ServerConfig } from "../../kit/config.js";
import { migrateDatabase } from "../../kit/db/index.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { type Logger, withoutRowData } from "../../kit/observability/logger.js";
import { type StartedService, startService } from "../../kit/runtime/index.js";
import type { AnyServiceModule } from "../../kit/service.js";
import {
  type RunningProcess,
  spawnService,
  stopProcess,
  waitServing,
} from "../../scripts/lib/launcher.js";
import { type FleetPlan, fleetPlan } from "../../scripts/lib/plan.js";
import { freePorts } from "../../scripts/lib/ports.js";
import { createOrderService, type OrderSettings } from "../../services/order/service.js";
import { createProductService, type ProductSettings } from "../../services/product/service.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { compiled } from "./build.js";
import { testCallers } from "./credentials.js";
import { Faults } from "./faults.js";
import { freshDatabase, onPostgres, opening, openingIn } from "./storage.js";
import { takeTurn } from "./turns.js";

/** A pino logger whose lines the test can read. */
export function captureLogger(
  service: string,
  level: "info" | "warn" = "info",
): {
  logger: Logger;
  lines: Record<string, unknown>[];
} {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return {
    logger: pino({ level, base: { service }, serializers: { err: withoutRowData } }, sink),
    lines,
  };
}

/** A service a test started, with the faults it can inject into its rpcs. */
export interface TestService extends StartedService {
  faults: Faults;
}

/** Starts one service on 127.0.0.1:0 with a database of its own (in memory on SQLite). */
export async function start(
  t: ExecutionContext,
  module: AnyServiceModule,
  options: {
    logger?: Logger;
    database?: string;
    dependencies?: Record<string, string>;
    /** More middleware, inside the kit's defaults and the fault injection. */
    middleware?: readonly ServerMiddleware[];
    /** Settings other than the SHOP_* defaults, for example maxPagesInFlight. */
    config?: Partial<ServerConfig>;
    /** The deadline of its calls to dependencies, 5 s by default. */
    dependencyTimeoutMs?: number;
  } = {},
): Promise<TestService> {
  const faults = new Faults();
  const service = await startService(module, {
    host: "127.0.0.1",
    port: 0,
    database: options.database ?? (await freshDatabase()),
    logLevel: "silent",
    shutdownGraceMs: 2_000,
    dependencies: options.dependencies,
    internalServices: registry.internalServices,
    publicServices: registry.publicServices,
    middleware: [faults.middleware, ...(options.middleware ?? [])],
    ...(options.logger && { logger: options.logger }),
    ...(options.dependencyTimeoutMs && { dependencyTimeoutMs: options.dependencyTimeoutMs }),
    ...options.config,
  });
  t.teardown(() => service.stop());
  opening(service.db);
  return { ...service, faults };
}

/** Typed clients of the services at `addresses`; one not given dials nothing. */
export function clientsFor(
  t: ExecutionContext,
  addresses: { user?: string; product?: string; order?: string },
) {
  const make = <S extends Parameters<typeof createClient>[0]>(definition: S, address?: string) => {
    const client = createClient(definition, address ?? "127.0.0.1:1", {
      middleware: testCallers(),
    });
    t.teardown(() => client.close());
    return client;
  };
  return {
    users: make(UserServiceService, addresses.user),
    products: make(ProductServiceService, addresses.product),
    inventory: make(InventoryServiceService, addresses.product),
    orders: make(OrderServiceService, addresses.order),
  };
}

export type TestFleet = Record<ServiceName, TestService> & {
  users: Client<typeof UserServiceService>;
  products: Client<typeof ProductServiceService>;
  inventory: Client<typeof InventoryServiceService>;
  orders: Client<typeof OrderServiceService>;
};

export interface FleetOptions {
  /** Settings of the order service; its background work runs often by default. */
  order?: Partial<OrderSettings>;
  /** Settings of the product service; its sweep runs often by default. */
  product?: Partial<ProductSettings>;
  loggers?: Partial<Record<ServiceName, Logger>>;
  /** More server middleware of a service, as start() takes it. */
  middleware?: Partial<Record<ServiceName, readonly ServerMiddleware[]>>;
  /** Server settings of a service other than the defaults, as start() takes them. */
  config?: Partial<Record<ServiceName, Partial<ServerConfig>>>;
  /** A service's database other than the fleet's (the same one through a proxy, say). */
  databases?: Partial<Record<ServiceName, string>>;
  /** The deadline of every service's calls to its dependencies, 5 s by default. */
  dependencyTimeoutMs?: number;
}

/** Every registered service, dependencies first, each wired to the replicas it calls. */
export async function startFleet(
  t: ExecutionContext,
  options: FleetOptions = {},
): Promise<TestFleet> {
  const modules: Partial<Record<ServiceName, AnyServiceModule>> = {
    product: createProductService({ sweepMs: 100, ...options.product }),
    order: createOrderService({ reconcileMs: 200, watchPollMs: 100, ...options.order }),
  };
  const started: Partial<Record<ServiceName, TestService>> = {};
  await takeTurn(t);
  const database = await freshDatabase();
  for (const service of registry.services) {
    started[service.name] = await start(t, modules[service.name] ?? service.module, {
      database: options.databases?.[service.name] ?? database,
      dependencies: Object.fromEntries(
        Object.entries(service.clients).map(([client, name]) => [
          client,
          started[name]?.server.address as string,
        ]),
      ),
      ...(options.loggers?.[service.name] && { logger: options.loggers[service.name] }),
      ...(options.middleware?.[service.name] && { middleware: options.middleware[service.name] }),
      ...(options.config?.[service.name] && { config: options.config[service.name] }),
      ...(options.dependencyTimeoutMs && { dependencyTimeoutMs: options.dependencyTimeoutMs }),
    });
  }
  const services = started as Record<ServiceName, TestService>;
  return {
    ...services,
    ...clientsFor(t, {
      user: services.user.server.address,
      product: services.product.server.address,
      order: services.order.server.address,
    }),
  };
}

export const orderLine = (productId: string, quantity: number) => ({ productId, quantity });

/** Real service processes, one or more replicas of each registered service. */
export interface ProcessFleet {
  /** Ports, databases and the environment of every replica, as a launcher would run them. */
  plan: FleetPlan;
  /** `127.0.0.1:<port>` of a service's replica `i` (from 0). */
  address(service: ServiceName, i?: number): string;
  /** The database every replica of a service shares: an SQLite file or a PostgreSQL URL. */
  database(service: ServiceName): string;
  /** SIGKILL a replica and wait until it is gone. */
  kill(service: ServiceName, i?: number): Promise<void>;
  /** Start a killed replica again on its port and data; resolves when it reports SERVING. */
  restart(service: ServiceName, i?: number): Promise<void>;
  /** SIGTERM every replica, then remove the data directory. */
  stop(): Promise<void>;
}

/** The replicas of every service of `fleet`, as the edge's topology takes them (startEnvoy). */
export function fleetEndpoints(fleet: ProcessFleet) {
  return Object.fromEntries(
    registry.names.map((name) => [
      name,
      fleet.plan.addresses[name].map((address) => {
        const [host, port] = address.split(":");
        return { host: host as string, port: Number(port) };
      }),
    ]),
  );
}

export interface ProcessFleetOptions {
  /** Replicas per service, sharing its database; 1 by default. */
  replicas?: Partial<Record<ServiceName, number>>;
  /** SHOP_* settings for every process. */
  env?: Record<string, string>;
  /** Mutual TLS with the credentials in this folder (`npm run certs` names). */
  tls?: string;
}

/**
 * Starts every registered service as processes on free loopback ports and waits until each
 * reports SERVING; the caller stops them (startProcessFleet does it for one test). Tried again on
 * other ports when one was taken before its process bound it (another test file can pick the
 * same free port).
 */
export async function spawnProcessFleet(options: ProcessFleetOptions = {}): Promise<ProcessFleet> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await spawnProcessFleetOnce(options);
    } catch (error) {
      if (attempt === 3 || !/EADDRINUSE/.test(String(error))) throw error;
    }
  }
}

async function spawnProcessFleetOnce(options: ProcessFleetOptions): Promise<ProcessFleet> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "shopmesh-processes-"));
  const counts = registry.names.map((name) => options.replicas?.[name] ?? 1);
  const free = await freePorts(counts.reduce((a, n) => a + n, 0));
  const ports = Object.fromEntries(
    registry.names.map((name, i) => [name, free.splice(0, counts[i])]),
  ) as Record<ServiceName, number[]>;
  // On PostgreSQL one database holds every service's schema, as one server would in production.
  const url = onPostgres() ? await freshDatabase() : undefined;
  const plan = fleetPlan({
    dataDir,
    ports,
    ...(url && { databases: Object.fromEntries(registry.names.map((name) => [name, url])) }),
    ...(options.tls && { tls: options.tls }),
  });
  for (const location of Object.values<string>(plan.databases)) openingIn(location);
  const specOf = (service: ServiceName, i: number) => {
    const spec = plan.replicas.filter((replica) => replica.service === service)[i];
    if (!spec) throw new Error(`no ${service} replica ${i}`);
    return spec;
  };
  const running = new Map<string, RunningProcess>();
  const runtime = await compiled();
  const spawn = (service: ServiceName, i: number) => {
    const spec = specOf(service, i);
    const env = { SHOP_LOG_LEVEL: "warn", SHOP_SHUTDOWN_GRACE_MS: "2000", ...options.env };
    const proc = spawnService({ ...spec, ...runtime, env: { ...spec.env, ...env } }, plan.logDir);
    running.set(spec.name, proc);
    return proc;
  };
  const fleet: ProcessFleet = {
    plan,
    address: (service, i = 0) => {
      const { host, port } = specOf(service, i);
      return `${host}:${port}`;
    },
    database: (service) => plan.databases[service],
    async kill(service, i = 0) {
      const child = running.get(specOf(service, i).name)?.child;
      if (!child || child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await gone;
    },
    async restart(service, i = 0) {
      await waitServing(spawn(service, i));
    },
    async stop() {
      await Promise.all([...running.values()].map((proc) => stopProcess(proc, 5_000)));
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  try {
    // As the supervisor does: replicas share a file, so each is migrated once, before any opens it.
    await Promise.all(
      registry.services.map((service) =>
        migrateDatabase(plan.databases[service.name], service.migrations, {
          schema: service.name,
        }),
      ),
    );
    await Promise.all(
      registry.names.flatMap((service, n) =>
        Array.from({ length: counts[n] as number }, (_, i) => waitServing(spawn(service, i))),
      ),
    );
  } catch (error) {
    await fleet.stop();
    throw error;
  }
  return fleet;
}

/** Service processes for one test, stopped by its teardown, with typed clients to replica 0. */
export async function startProcessFleet(t: ExecutionContext, options: ProcessFleetOptions = {}) {
  const fleet = await spawnProcessFleet(options);
  t.teardown(() => fleet.stop());
  return {
    ...fleet,
    ...clientsFor(t, {
      user: fleet.address("user"),
      product: fleet.address("product"),
      order: fleet.address("order"),
    }),
  };
}
