// `npm run mesh` under test: the real launcher on free ports, a real Envoy and two real replica
// processes per service, one mesh per test file. Where a call landed is taken from Envoy (its
// JSON access log and per-host counters), never from a replica's word, except for calls between
// services, which do not pass Envoy.
//
//   const mesh = useMesh();             // in the test file: launches in test.before, stops after
//   await mesh.waitHealthy(["user"]);   // before a test uses a cluster
//   await mesh.stopReplica("product-2", "SIGTERM");
//
// Tests share the mesh, so they run serially; a test that stops, kills or swaps a replica
// restores it in its teardown.
import { existsSync, readFileSync } from "node:fs";
import { Metadata } from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import type { Product } from "../../gen/ts/shop/product/v1/product.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import type { User } from "../../gen/ts/shop/user/v1/user.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { createClient } from "../../kit/client/index.js";
import type { CallOptions } from "../../kit/context.js";
import { type StartedService, startService } from "../../kit/runtime/index.js";
import type { AnyServiceModule } from "../../kit/service.js";
import {
  envoyAdmin,
  envoyCounter,
  upstreamHosts,
  waitEnvoyReady,
} from "../../scripts/lib/envoy.js";
import {
  type RunningProcess,
  spawnService,
  stopProcess,
  waitServing,
} from "../../scripts/lib/launcher.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { compiled } from "./build.js";
import { edgeTransport, meshSecurity, testCallers } from "./credentials.js";
import { eventually, until } from "./eventually.js";
import { childPids, isListening, type Launch, startLaunch } from "./launch.js";

export interface AccessLogLine {
  start_time: string;
  path: string;
  protocol: string;
  response_code: number;
  grpc_status: number | null;
  upstream_cluster: string;
  upstream_host: string | null;
  attempts: number;
  duration_ms: number;
  response_flags: string;
  response_code_details: string;
  x_request_id: string;
  /** The trace of the request; null when Envoy traces nothing. */
  trace_id: string | null;
}

const run = `${process.pid.toString(36)}${Date.now().toString(36)}`;
let serial = 0;

/** A name unique to this test run, for ids and x-request-ids: `<what>-<run>-<n>`. */
export const tag = (what: string) => `${what}-${run}-${++serial}`;

/** Metadata carrying an x-request-id, which Envoy keeps and writes to its access log. */
export const withId = (id: string): CallOptions => {
  const metadata = new Metadata();
  metadata.set("x-request-id", id);
  return { metadata };
};

export const sum = (counts: Record<string, number>) =>
  Object.values(counts).reduce((a, n) => a + n, 0);

/** A callback for a generated grpc-js client method that settles a promise. */
export const callback =
  <T>(resolve: (value: T) => void, reject: (error: unknown) => void) =>
  (error: Error | null, value?: T) =>
    error || value === undefined ? reject(error) : resolve(value);

/** The mesh of one test file, and what its tests do with it. */
export class MeshUnderTest {
  launched: Launch | undefined;
  /** Replicas a test started in place of the launcher's, by name; the newest wins. */
  private readonly replacements = new Map<string, RunningProcess>();

  get launch(): Launch {
    if (!this.launched) throw new Error("npm run mesh is not running");
    return this.launched;
  }

  get plan() {
    return this.launch.plan;
  }

  get envoy() {
    return this.plan.envoy as NonNullable<Launch["plan"]["envoy"]>;
  }

  /** Envoy's listener, `127.0.0.1:<port>`. */
  front(): string {
    return `127.0.0.1:${this.envoy.port}`;
  }

  admin(adminPath: string): Promise<string> {
    return envoyAdmin(this.envoy.adminPort, adminPath);
  }

  async hostsOf(cluster: string) {
    return upstreamHosts(await this.admin("/clusters?format=json")).filter(
      (host) => host.cluster === cluster,
    );
  }

  /** Envoy's view of one replica: its health flags and counters; undefined if Envoy has none. */
  async hostAt(cluster: string, address: string) {
    return (await this.hostsOf(cluster)).find((host) => host.address === address);
  }

  /** A counter such as `cluster.product.upstream_rq_retry`. */
  counter(name: string): Promise<number> {
    return envoyCounter(this.envoy.adminPort, name);
  }

  /** Per-host rq_total of every cluster, keyed `cluster host:port`. */
  async requestTotals(): Promise<Record<string, number>> {
    const totals: Record<string, number> = {};
    for (const host of upstreamHosts(await this.admin("/clusters?format=json"))) {
      totals[`${host.cluster} ${host.address}`] = host.stats.rq_total ?? 0;
    }
    return totals;
  }

  /** Waits until every host of the clusters is healthy (no active or outlier failure flag). */
  waitHealthy(clusters: readonly string[], timeoutMs = 20_000): Promise<void> {
    return waitEnvoyReady(this.envoy.adminPort, { clusters, timeoutMs });
  }

  accessLog(): AccessLogLine[] {
    const file = this.envoy.accessLog;
    if (!existsSync(file)) return [];
    return readFileSync(file, "utf8")
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line) as AccessLogLine);
  }

  /** The access log lines of requests whose x-request-id starts with `prefix`, once `count` are in. */
  loggedRequests(prefix: string, count: number): Promise<AccessLogLine[]> {
    return eventually(`${count} access log lines for ${prefix}*`, () => {
      const lines = this.accessLog().filter((line) => line.x_request_id?.startsWith(prefix));
      return lines.length >= count ? lines : undefined;
    });
  }

  spec(name: string) {
    const found = this.plan.replicas.find((replica) => replica.name === name);
    if (!found) throw new Error(`no replica ${name}`);
    return found;
  }

  /** The pid serving a replica: a test's replacement, else the launcher's child with its port. */
  replicaPid(name: string): number {
    const replacement = this.replacements.get(name);
    if (replacement?.child.pid && replacement.child.exitCode === null) return replacement.child.pid;
    for (const pid of childPids(this.launch.child.pid as number)) {
      const environ = (() => {
        try {
          return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
        } catch {
          return []; // exited meanwhile
        }
      })();
      if (environ.includes(`SHOP_PORT=${this.spec(name).port}`)) return pid;
    }
    throw new Error(`no running process for ${name}`);
  }

  /** Sends `signal` to a replica and waits until its process is gone. */
  async stopReplica(name: string, signal: NodeJS.Signals): Promise<void> {
    const pid = this.replicaPid(name);
    process.kill(pid, signal);
    await until(`${name} (pid ${pid}) to exit`, () => !existsSync(`/proc/${pid}/environ`), {
      timeoutMs: 15_000,
      intervalMs: 20,
    });
  }

  /** Starts a replica again exactly as the launcher did, and waits until it is SERVING. */
  async restartReplica(name: string): Promise<void> {
    const proc = spawnService({ ...this.spec(name), ...(await compiled()) }, this.plan.logDir);
    this.replacements.set(name, proc);
    await waitServing(proc);
  }

  /**
   * Serves `module` in this process in place of replica `name` until the test ends, when the
   * launcher's replica comes back; resolves once Envoy counts it healthy.
   */
  async replaceReplica(
    t: ExecutionContext,
    name: string,
    module: AnyServiceModule,
  ): Promise<StartedService> {
    await this.stopReplica(name, "SIGTERM");
    const replica = await this.inProcessReplica(name, module);
    t.teardown(async () => {
      await replica.stop();
      await this.restartReplica(name);
    });
    await this.waitHealthy([this.spec(name).service]);
    return replica;
  }

  /**
   * Serves `module` in this process on a replica's port, with the replicas' shared database and
   * the replica's mTLS identity.
   */
  inProcessReplica(name: string, module: AnyServiceModule): Promise<StartedService> {
    const { service, host, port } = this.spec(name);
    return startService(module, {
      host,
      port,
      database: this.plan.databases[service],
      logLevel: "silent",
      shutdownGraceMs: 1_000,
      security: meshSecurity(service),
      internalServices: registry.internalServices,
      publicServices: registry.publicServices,
      dependencyIdentities: { ...registry.get(service).clients },
      dependencies: Object.fromEntries(
        Object.entries(registry.get(service).clients).map(([client, dependency]) => [
          client,
          this.plan.addresses[dependency as ServiceName].join(","),
        ]),
      ),
    });
  }

  /**
   * Promise clients for the generated service definitions, dialling Envoy over TLS and signed in
   * as callers allowed to make each call (test/helpers/credentials.ts); no client retries.
   */
  clients(options: { retryCreateOrder?: boolean } = {}) {
    const at = this.front();
    const common = { middleware: testCallers(), transport: edgeTransport() };
    const made = {
      users: createClient(UserServiceService, at, common),
      products: createClient(ProductServiceService, at, common),
      orders: createClient(OrderServiceService, at, {
        ...common,
        ...(options.retryCreateOrder && { alsoRetry: ["CreateOrder"] }),
      }),
    };
    return {
      ...made,
      close: () => {
        for (const client of Object.values(made)) client.close();
      },
    };
  }

  /**
   * Sends calls in rounds of four until Envoy's access log shows every replica of the cluster
   * serving at least one (ten rounds at most), and returns the replicas it saw.
   */
  async untilEveryReplica(
    service: ServiceName,
    prefix: string,
    send: (requestId: string) => Promise<unknown>,
  ): Promise<Set<string>> {
    const seen = new Set<string>();
    const want = this.plan.addresses[service];
    for (let round = 0; round < 10 && !want.every((a) => seen.has(a)); round++) {
      await Promise.all([0, 1, 2, 3].map((k) => send(`${prefix}-${round}-${k}`)));
      const lines = await this.loggedRequests(`${prefix}-${round}-`, 4);
      for (const entry of lines) {
        if (entry.grpc_status !== 0) throw new Error(`call failed: ${JSON.stringify(entry)}`);
        if (entry.upstream_cluster === service && entry.upstream_host) {
          seen.add(entry.upstream_host);
        }
      }
    }
    return seen;
  }

  /** Stops replacements, then Ctrl-C; fails unless the launcher exits 0 and frees every port. */
  async stop(): Promise<void> {
    if (!this.launched) return;
    const launched = this.launched;
    await Promise.all([...this.replacements.values()].map((proc) => stopProcess(proc, 5_000)));
    const code = await launched.stop();
    if (code !== 0) throw new Error(`npm run mesh exited ${code} on Ctrl-C:\n${launched.output()}`);
    // Ctrl-C stopped everything: every port of the mesh is free again.
    const open: string[] = [];
    const ports: [string, number][] = launched.plan.replicas.map((r) => [r.name, r.port]);
    ports.push(["envoy", this.envoy.port]);
    for (const [what, port] of ports) if (await isListening(port)) open.push(`${what} :${port}`);
    if (open.length > 0) throw new Error(`still listening after Ctrl-C: ${open.join(", ")}`);
  }
}

/** Launches `npm run mesh` (log level info) for this test file, and stops it after. */
export function useMesh(): MeshUnderTest {
  const mesh = new MeshUnderTest();
  test.before(async () => {
    mesh.launched = await startLaunch("mesh", { env: { SHOP_LOG_LEVEL: "info" } });
  });
  test.after.always(() => mesh.stop());
  return mesh;
}

/** A new user, created through Envoy. */
export const newUser = (c: ReturnType<MeshUnderTest["clients"]>): Promise<User> =>
  addUser(c.users, { email: `${tag("shopper")}@example.com`, displayName: "Mesh Shopper" });

/** A new product with `stock`, EUR 12.50, created through Envoy. */
export const newProduct = (
  c: ReturnType<MeshUnderTest["clients"]>,
  stock: number,
): Promise<Product> =>
  addProduct(c.products, { name: `Mesh mug ${tag("mug")}`, amountMinor: "1250", stock });
