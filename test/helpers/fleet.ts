// The test fleet: every registered service in this process, on 127.0.0.1:0 with an in-memory
// database, wired to the services it calls as the registry says, with typed clients to them.
// Every start is paired with a teardown, so a failing test never leaves a server running.
//
//   const fleet = await startFleet(t);                       // user, product, order, …
//   await addUser(fleet.users);                              // scripts/lib/seed.ts
//   fleet.product.faults.set("CommitReservation", { code: Code.UNAVAILABLE });
import { Writable } from "node:stream";
import type { ExecutionContext } from "ava";
import { pino } from "pino";
import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { type Client, createClient } from "../../kit/client.js";
import type { Logger } from "../../kit/logger.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { type StartedService, startService } from "../../kit/runtime.js";
import type { AnyServiceModule } from "../../kit/service.js";
import { createOrderService, type OrderSettings } from "../../services/order/service.js";
import { createProductService, type ProductSettings } from "../../services/product/service.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { Faults } from "./faults.js";

/** A pino logger whose lines the test can read. */
export function captureLogger(service: string): {
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
  return { logger: pino({ level: "info", base: { service } }, sink), lines };
}

/** A service a test started, with the faults it can inject into its rpcs. */
export interface TestService extends StartedService {
  faults: Faults;
}

/** Starts one service on 127.0.0.1:0 with its own in-memory database. */
export async function start(
  t: ExecutionContext,
  module: AnyServiceModule,
  options: {
    logger?: Logger;
    database?: string;
    dependencies?: Record<string, string>;
    /** More middleware, inside the kit's defaults and the fault injection. */
    middleware?: readonly ServerMiddleware[];
  } = {},
): Promise<TestService> {
  const faults = new Faults();
  const service = await startService(module, {
    host: "127.0.0.1",
    port: 0,
    database: options.database ?? ":memory:",
    logLevel: "silent",
    shutdownGraceMs: 2_000,
    dependencies: options.dependencies,
    middleware: [faults.middleware, ...(options.middleware ?? [])],
    ...(options.logger && { logger: options.logger }),
  });
  t.teardown(() => service.stop());
  return { ...service, faults };
}

/** Typed clients of the services at `addresses`; one not given dials nothing. */
export function clientsFor(
  t: ExecutionContext,
  addresses: { user?: string; product?: string; order?: string },
) {
  const make = <S extends Parameters<typeof createClient>[0]>(definition: S, address?: string) => {
    const client = createClient(definition, address ?? "127.0.0.1:1", {
      defaultTimeoutMs: 10_000,
    });
    t.teardown(() => client.close());
    return client;
  };
  return {
    users: make(UserServiceService, addresses.user),
    products: make(ProductServiceService, addresses.product),
    orders: make(OrderServiceService, addresses.order),
  };
}

export type TestFleet = Record<ServiceName, TestService> & {
  users: Client<typeof UserServiceService>;
  products: Client<typeof ProductServiceService>;
  orders: Client<typeof OrderServiceService>;
};

export interface FleetOptions {
  /** Settings of the order service; its background work runs often by default. */
  order?: Partial<OrderSettings>;
  /** Settings of the product service; its sweep runs often by default. */
  product?: Partial<ProductSettings>;
  /** A module to run instead of the registered one. */
  modules?: Partial<Record<ServiceName, AnyServiceModule>>;
  loggers?: Partial<Record<ServiceName, Logger>>;
}

/** Every registered service, dependencies first, each wired to the replicas it calls. */
export async function startFleet(
  t: ExecutionContext,
  options: FleetOptions = {},
): Promise<TestFleet> {
  const modules: Partial<Record<ServiceName, AnyServiceModule>> = {
    product: createProductService({ sweepMs: 100, ...options.product }),
    order: createOrderService({ reconcileMs: 200, watchPollMs: 100, ...options.order }),
    ...options.modules,
  };
  const started: Partial<Record<ServiceName, TestService>> = {};
  for (const service of registry.services) {
    started[service.name] = await start(t, modules[service.name] ?? service.module, {
      dependencies: Object.fromEntries(
        Object.entries(service.clients).map(([client, name]) => [
          client,
          started[name]?.server.address as string,
        ]),
      ),
      ...(options.loggers?.[service.name] && { logger: options.loggers[service.name] }),
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
