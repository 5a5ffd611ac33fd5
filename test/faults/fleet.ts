// Real service processes for fault tests: each `node services/<svc>/main.ts` on a free loopback
// port, with its SQLite file in a temp directory of its own, so that a test can kill -9 one,
// restart it on the same port and file, or run two order replicas on one file.
//
//   const fleet = await startFleet({ order: 2, env: { SHOP_RESERVATION_TTL_MS: "1500" } });
//   const { fleet, users, orders } = await fleetFor(t);   // or: one test's, with clients
//   fleet.address("order", 1);       // 127.0.0.1:<port of the second order replica>
//   await fleet.kill("product");     // SIGKILL, no goodbye
//   await fleet.restart("product");  // same port, same file; resolves once it reports SERVING
//   await fleet.stop();              // in test.after.always / t.teardown
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { ExecutionContext } from "ava";
import {
  freePorts,
  type RunningProcess,
  type ServiceKind,
  spawnService,
  stopProcess,
  waitServing,
} from "../../scripts/lib/launcher.js";
import { clientsFor } from "../helpers/mesh.js";

export interface FleetOptions {
  /** Order replicas sharing one database file; 1 by default. */
  order?: number;
  /** SHOP_* settings for every process. */
  env?: Record<string, string>;
}

export interface Fleet {
  /** The data and log directory. */
  dir: string;
  /** The database file of a service. */
  database(service: ServiceKind): string;
  /** `127.0.0.1:<port>` of a service's replica `i`. */
  address(service: ServiceKind, i?: number): string;
  /** SIGKILL a replica and wait until it is gone. */
  kill(service: ServiceKind, i?: number): Promise<void>;
  /** Start a killed replica again on its port and file; resolves when it reports SERVING. */
  restart(service: ServiceKind, i?: number): Promise<void>;
  /** SIGTERM everything, then remove the directory. */
  stop(): Promise<void>;
}

/** Starts user, product and `order` order replicas, and waits until all report SERVING. */
export async function startFleet(options: FleetOptions = {}): Promise<Fleet> {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-faults-"));
  const replicas = options.order ?? 1;
  const ports = await freePorts(2 + replicas);
  const database = (service: ServiceKind) => path.join(dir, `${service}.sqlite`);
  const addressOf = (port: number | undefined) => `127.0.0.1:${port}`;
  const userAddr = addressOf(ports[0]);
  const productAddr = addressOf(ports[1]);
  const specs: Record<ServiceKind, { port: number; name: string }[]> = {
    user: [{ port: ports[0] as number, name: "user" }],
    product: [{ port: ports[1] as number, name: "product" }],
    order: ports.slice(2).map((port, i) => ({ port, name: `order-${i + 1}` })),
  };
  const procs = new Map<string, RunningProcess>();
  const spawn = (service: ServiceKind, i: number) => {
    const spec = specs[service][i];
    if (!spec) throw new Error(`no ${service} replica ${i}`);
    const proc = spawnService(
      {
        name: spec.name,
        service,
        host: "127.0.0.1",
        port: spec.port,
        env: {
          SHOP_DATABASE: database(service),
          SHOP_LOG_LEVEL: "warn",
          SHOP_USER_ADDR: userAddr,
          SHOP_PRODUCT_ADDR: productAddr,
          SHOP_SHUTDOWN_GRACE_MS: "2000",
          ...options.env,
        },
      },
      dir,
    );
    procs.set(spec.name, proc);
    return proc;
  };
  const get = (service: ServiceKind, i: number) => {
    const proc = procs.get(specs[service][i]?.name ?? "");
    if (!proc) throw new Error(`no ${service} replica ${i}`);
    return proc;
  };

  const fleet: Fleet = {
    dir,
    database,
    address: (service, i = 0) => addressOf(specs[service][i]?.port),
    async kill(service, i = 0) {
      const { child } = get(service, i);
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGKILL");
      await gone;
    },
    async restart(service, i = 0) {
      await waitServing(spawn(service, i));
    },
    async stop() {
      await Promise.all([...procs.values()].map((proc) => stopProcess(proc, 5_000)));
      await rm(dir, { recursive: true, force: true });
    },
  };
  try {
    // The user and product services first, so that the order replicas share a migrated file
    // only with each other.
    await Promise.all([waitServing(spawn("user", 0)), waitServing(spawn("product", 0))]);
    for (let i = 0; i < replicas; i++) await waitServing(spawn("order", i));
  } catch (error) {
    await fleet.stop();
    throw error;
  }
  return fleet;
}

/** A fleet for one test, stopped by its teardown, with typed clients to user, product and order. */
export async function fleetFor(t: ExecutionContext, options: FleetOptions = {}) {
  const fleet = await startFleet(options);
  t.teardown(() => fleet.stop());
  return {
    fleet,
    ...clientsFor(t, {
      user: fleet.address("user"),
      product: fleet.address("product"),
      order: fleet.address("order"),
    }),
  };
}
