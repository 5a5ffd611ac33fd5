// `npm run mesh` end to end: the real launcher (scripts/mesh.ts) on free ports, a real Envoy and six
// real replica processes, one mesh for the whole file. Where a call landed is taken from Envoy (its
// JSON access log and per-host counters), never from a replica's word, except for the order
// service's direct calls to user and product, which do not pass Envoy.
//
// The tests share the mesh, so they run serially. Each one first waits for the clusters it uses
// to be healthy, and a test that stops, kills or swaps a replica restores it in its teardown.
import { existsSync, readdirSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { credentials, Metadata } from "@grpc/grpc-js";
import test from "ava";
import { parse } from "yaml";
import { composeTopology, localTopology } from "../deploy/envoy/config.js";
import {
  OrderServiceClient,
  OrderServiceService,
  OrderState,
} from "../gen/ts/shop/order/v1/order.js";
import {
  type Product,
  ProductServiceClient,
  ProductServiceService,
} from "../gen/ts/shop/product/v1/product.js";
import {
  GetUserRequest,
  GetUserResponse,
  type User,
  UserServiceClient,
  UserServiceService,
} from "../gen/ts/shop/user/v1/user.js";
import { type CallOptions, createClient } from "../kit/client.js";
import { Code, ServiceError } from "../kit/errors.js";
import { type ServiceModule, type StartedService, startService } from "../kit/main.js";
import { envoyAdmin, upstreamHosts, waitEnvoyReady } from "../scripts/lib/envoy.js";
import {
  assertPortsFree,
  freePorts,
  type RunningProcess,
  repoRoot,
  SERVICE_KINDS,
  type ServiceKind,
  spawnService,
  stopProcess,
  tool,
  waitServing,
} from "../scripts/lib/launcher.js";
import { type MeshPlan, meshPlan } from "../scripts/lib/mesh.js";
import { createOrderService } from "../services/order/service.js";
import { createProductService } from "../services/product/service.js";
import { exec, grpcurl } from "./helpers/exec.js";
import { awaitBanner, childPids, type ScriptProcess, spawnScript } from "./helpers/launch.js";

// ---------------------------------------------------------------------------------------------
// The mesh under test

interface Mesh extends ScriptProcess {
  plan: MeshPlan;
  banner: string;
  /** Ctrl-C, as a user would; after 20 s, SIGKILL for the launcher and everything it started. */
  stop(): Promise<number | null>;
}

async function startMesh(): Promise<Mesh> {
  const ports = await freePorts(8);
  const dataDir = await mkdtemp(path.join(tmpdir(), "shopmesh-mesh-"));
  const take = () => String(ports.pop());
  const env = {
    SHOP_DATA_DIR: dataDir,
    SHOP_USER_PORTS: `${take()},${take()}`,
    SHOP_PRODUCT_PORTS: `${take()},${take()}`,
    SHOP_ORDER_PORTS: `${take()},${take()}`,
    SHOP_ENVOY_PORT: take(),
    SHOP_ENVOY_ADMIN_PORT: take(),
    SHOP_LOG_LEVEL: "info",
  };
  const plan = meshPlan({ ...process.env, ...env });
  const proc = await spawnScript(path.join("scripts", "mesh.ts"), { dataDir, env });
  try {
    const { banner, stop } = await awaitBanner(proc, "Ctrl-C stops everything.\n");
    return { ...proc, plan, banner, stop };
  } catch (error) {
    await rm(dataDir, { recursive: true, force: true });
    throw error;
  }
}

let mesh: Mesh;
/** Replicas a test started in place of the launcher's, by name; the newest wins. */
const replacements = new Map<string, RunningProcess>();

test.before(async () => {
  mesh = await startMesh();
});

test.after.always(async () => {
  if (!mesh) return;
  await Promise.all([...replacements.values()].map((proc) => stopProcess(proc, 5_000)));
  try {
    const code = await mesh.stop();
    if (code !== 0) throw new Error(`npm run mesh exited ${code} on Ctrl-C:\n${mesh.output()}`);
    // Ctrl-C stopped everything: every port of the mesh is free again.
    const ports: Record<string, number> = { envoy: mesh.plan.envoy.port };
    for (const replica of mesh.plan.replicas) ports[replica.name] = replica.port;
    await assertPortsFree("127.0.0.1", ports, "still taken after Ctrl-C");
  } finally {
    await rm(mesh.plan.dataDir, { recursive: true, force: true });
  }
});

// ---------------------------------------------------------------------------------------------
// Envoy's view: per-host counters, health flags, the access log

const front = () => `127.0.0.1:${mesh.plan.envoy.port}`;
const admin = (adminPath: string) => envoyAdmin(mesh.plan.envoy.adminPort, adminPath);
const hostsOf = async (cluster: string) =>
  upstreamHosts(await admin("/clusters?format=json")).filter((host) => host.cluster === cluster);

/** A cluster-level counter such as `cluster.product.upstream_rq_retry`. */
async function counter(name: string): Promise<number> {
  const escaped = name.replaceAll(".", "\\.");
  const body = JSON.parse(await admin(`/stats?format=json&filter=^${escaped}$`)) as {
    stats: { name: string; value?: number }[];
  };
  return body.stats.find((stat) => stat.name === name)?.value ?? 0;
}

/** Per-host rq_total of every cluster, keyed `cluster host:port`. */
async function requestTotals(): Promise<Record<string, number>> {
  const totals: Record<string, number> = {};
  for (const host of upstreamHosts(await admin("/clusters?format=json"))) {
    totals[`${host.cluster} ${host.address}`] = host.stats.rq_total ?? 0;
  }
  return totals;
}

/** Waits until every host of the clusters is healthy (no active or outlier failure flag). */
const waitHealthy = (clusters: readonly string[], timeoutMs = 20_000) =>
  waitEnvoyReady(mesh.plan.envoy.adminPort, { clusters, timeoutMs });

interface AccessLogLine {
  start_time: string;
  path: string;
  protocol: string;
  response_code: number;
  grpc_status: number | null;
  upstream_cluster: string;
  upstream_host: string | null;
  attempts: number;
  response_flags: string;
  x_request_id: string;
}

function accessLog(): AccessLogLine[] {
  const file = mesh.plan.envoy.accessLog;
  if (!existsSync(file)) return [];
  return readFileSync(file, "utf8")
    .split("\n")
    .filter((line) => line.startsWith("{"))
    .map((line) => JSON.parse(line) as AccessLogLine);
}

/** The access log lines of requests whose x-request-id starts with `prefix`, once `count` are in. */
async function loggedRequests(prefix: string, count: number): Promise<AccessLogLine[]> {
  const deadline = Date.now() + 5_000;
  for (;;) {
    const lines = accessLog().filter((line) => line.x_request_id?.startsWith(prefix));
    if (lines.length >= count) return lines;
    if (Date.now() > deadline) {
      throw new Error(`${lines.length} of ${count} access log lines for ${prefix}* arrived`);
    }
    await sleep(100);
  }
}

// ---------------------------------------------------------------------------------------------
// Replicas: find, stop and restart them as the launcher runs them

const spec = (name: string) => {
  const found = mesh.plan.replicas.find((replica) => replica.name === name);
  if (!found) throw new Error(`no replica ${name}`);
  return found;
};

/** The pid serving a replica: a test's replacement, else the launcher's child with its port. */
function replicaPid(name: string): number {
  const replacement = replacements.get(name);
  if (replacement?.child.pid && replacement.child.exitCode === null) return replacement.child.pid;
  for (const pid of childPids(mesh.child.pid as number)) {
    const environ = (() => {
      try {
        return readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
      } catch {
        return []; // exited meanwhile
      }
    })();
    if (environ.includes(`SHOP_PORT=${spec(name).port}`)) return pid;
  }
  throw new Error(`no running process for ${name}`);
}

/** Sends `signal` to a replica and waits until its process is gone. */
async function stopReplica(name: string, signal: NodeJS.Signals): Promise<void> {
  const pid = replicaPid(name);
  process.kill(pid, signal);
  const deadline = Date.now() + 15_000;
  while (existsSync(`/proc/${pid}/environ`) && Date.now() < deadline) await sleep(20);
}

/** Starts a replica again exactly as the launcher did, and waits until it is SERVING. */
async function restartReplica(name: string): Promise<void> {
  const proc = spawnService(spec(name), mesh.plan.logDir);
  replacements.set(name, proc);
  await waitServing(proc);
}

/** Serves `module` in this process on a replica's port, with the replicas' shared database. */
async function inProcessReplica(name: string, module: ServiceModule): Promise<StartedService> {
  const { service, host, port } = spec(name);
  return startService(module, {
    host,
    port,
    database: mesh.plan.databases[service],
    logLevel: "silent",
    shutdownGraceMs: 1_000,
  });
}

// ---------------------------------------------------------------------------------------------
// Clients through Envoy and test data

const run = `${process.pid.toString(36)}${Date.now().toString(36)}`;
let serial = 0;
const tag = (what: string) => `${what}-${run}-${++serial}`;

/** Metadata carrying an x-request-id, which Envoy keeps and writes to its access log. */
const withId = (id: string): CallOptions => {
  const metadata = new Metadata();
  metadata.set("x-request-id", id);
  return { metadata };
};

/** Promise clients for the generated service definitions, dialling Envoy; no client retries. */
function clients(options: { retryCreateOrder?: boolean } = {}) {
  const at = front();
  const made = {
    users: createClient(UserServiceService, at, {
      serviceName: "shop.user.v1.UserService",
      defaultTimeoutMs: 10_000,
    }),
    products: createClient(ProductServiceService, at, {
      serviceName: "shop.product.v1.ProductService",
      defaultTimeoutMs: 10_000,
    }),
    orders: createClient(OrderServiceService, at, {
      serviceName: "shop.order.v1.OrderService",
      defaultTimeoutMs: 10_000,
      ...(options.retryCreateOrder && { idempotentMethods: ["CreateOrder"] }),
    }),
  };
  return {
    ...made,
    close: () => {
      for (const client of Object.values(made)) client.close();
    },
  };
}

type Clients = ReturnType<typeof clients>;

async function newUser(c: Clients): Promise<User> {
  const { user } = await c.users.createUser({
    user: {
      userId: "",
      email: `${tag("shopper")}@example.com`,
      displayName: "Mesh Shopper",
      createTime: undefined,
      updateTime: undefined,
    },
  });
  return user as User;
}

async function newProduct(c: Clients, stock: number): Promise<Product> {
  const { product } = await c.products.createProduct({
    product: {
      productId: "",
      name: `Mesh mug ${tag("mug")}`,
      description: "",
      price: { currencyCode: "EUR", amountMinor: "1250" },
      stockQuantity: stock,
      createTime: undefined,
      updateTime: undefined,
    },
  });
  return product as Product;
}

const line = (productId: string, quantity: number) => ({
  productId,
  quantity,
  unitPrice: undefined,
});

/**
 * Sends calls in rounds of four until Envoy's access log shows every replica of the cluster serving
 * at least one (ten rounds at most), and returns the replicas it saw.
 */
async function untilEveryReplica(
  service: ServiceKind,
  prefix: string,
  send: (requestId: string) => Promise<unknown>,
): Promise<Set<string>> {
  const seen = new Set<string>();
  const want = mesh.plan.addresses[service];
  for (let round = 0; round < 10 && !want.every((a) => seen.has(a)); round++) {
    await Promise.all([0, 1, 2, 3].map((k) => send(`${prefix}-${round}-${k}`)));
    const lines = await loggedRequests(`${prefix}-${round}-`, 4);
    for (const entry of lines) {
      if (entry.grpc_status !== 0) throw new Error(`call failed: ${JSON.stringify(entry)}`);
      if (entry.upstream_cluster === service && entry.upstream_host) seen.add(entry.upstream_host);
    }
  }
  return seen;
}

const callback =
  <T>(resolve: (value: T) => void, reject: (error: unknown) => void) =>
  (error: Error | null, value?: T) =>
    error || value === undefined ? reject(error) : resolve(value);

const sum = (counts: Record<string, number>) => Object.values(counts).reduce((a, n) => a + n, 0);

// ---------------------------------------------------------------------------------------------
// The tests

test.serial("the banner's grpcurl and curl commands work as printed, through Envoy", async (t) => {
  const { plan, banner } = mesh;
  t.true(banner.includes(`127.0.0.1:${plan.envoy.port}`), banner);
  for (const address of Object.values(plan.addresses).flat()) t.true(banner.includes(address));
  const commands = banner
    .split("\n")
    .map((entry) => entry.trim())
    .filter((entry) => /^(\S*grpcurl|curl) /.test(entry));
  t.true(commands.length >= 7, banner);
  t.true(commands.some((command) => /curl -s \S+\/users\/usr_/.test(command)));
  t.true(commands.some((command) => /curl -s \S+\/products\/prd_/.test(command)));
  t.true(commands.some((command) => /-X POST \S+\/orders /.test(command)));
  t.true(commands.some((command) => command.endsWith(`${front()} list`)));

  for (const command of commands) {
    const result = await exec("sh", ["-c", command], { cwd: repoRoot });
    t.is(result.code, 0, `${command}\n${result.stderr}`);
    t.not(result.stdout.trim(), "", command);
    if (command.includes("| grep")) continue;
    if (command.endsWith(" list")) {
      t.true(result.stdout.includes("shop.order.v1.OrderService"), result.stdout);
      continue;
    }
    const body = JSON.parse(result.stdout) as Record<string, unknown>;
    t.is(body.code, undefined, `${command} answered an error: ${result.stdout}`);
  }
  const posted = commands.find((command) => command.includes("-X POST"));
  const order = JSON.parse((await exec("sh", ["-c", posted as string])).stdout);
  t.is(order.order.state, "ORDER_STATE_CONFIRMED");
});

test.serial(
  "generated clients and grpcurl calls through Envoy land on both replicas of each service",
  async (t) => {
    await waitHealthy(SERVICE_KINDS);
    const c = clients();
    t.teardown(c.close);
    const user = await newUser(c);
    const product = await newProduct(c, 100);
    const { order } = await c.orders.createOrder({
      userId: user.userId,
      lines: [line(product.productId, 1)],
      requestId: tag("spread-order"),
    });
    const orderId = order?.orderId as string;
    const before = await requestTotals();

    // The generated grpc-js client classes, as ts-proto emits them.
    const users = new UserServiceClient(front(), credentials.createInsecure());
    const products = new ProductServiceClient(front(), credentials.createInsecure());
    const orders = new OrderServiceClient(front(), credentials.createInsecure());
    t.teardown(() => {
      for (const client of [users, products, orders]) client.close();
    });
    const meta = (id: string) => withId(id).metadata as Metadata;
    const generated: Record<ServiceKind, (id: string) => Promise<unknown>> = {
      user: (id) =>
        new Promise((resolve, reject) =>
          users.getUser({ userId: user.userId }, meta(id), callback(resolve, reject)),
        ),
      product: (id) =>
        new Promise((resolve, reject) =>
          products.getProduct(
            { productId: product.productId },
            meta(id),
            callback(resolve, reject),
          ),
        ),
      order: (id) =>
        new Promise((resolve, reject) =>
          orders.getOrder({ orderId }, meta(id), callback(resolve, reject)),
        ),
    };
    const grpcurlCall: Record<ServiceKind, [string, object]> = {
      user: ["shop.user.v1.UserService/GetUser", { user_id: user.userId }],
      product: ["shop.product.v1.ProductService/GetProduct", { product_id: product.productId }],
      order: ["shop.order.v1.OrderService/GetOrder", { order_id: orderId }],
    };
    const callGrpcurl = async (service: ServiceKind, id: string) => {
      const [method, body] = grpcurlCall[service];
      await grpcurl(front(), method, body, ["-H", `x-request-id: ${id}`]);
    };

    for (const service of SERVICE_KINDS) {
      const replicas = [...mesh.plan.addresses[service]].sort();
      const viaGenerated = await untilEveryReplica(service, tag(`gen-${service}`), (id) =>
        generated[service](id),
      );
      t.deepEqual([...viaGenerated].sort(), replicas, `generated ${service} client`);
      const viaGrpcurl = await untilEveryReplica(service, tag(`cli-${service}`), (id) =>
        callGrpcurl(service, id),
      );
      t.deepEqual([...viaGrpcurl].sort(), replicas, `grpcurl ${service}`);
    }

    // Envoy's own per-host counters agree: every replica of every cluster served calls.
    const after = await requestTotals();
    for (const service of SERVICE_KINDS) {
      for (const address of mesh.plan.addresses[service]) {
        const key = `${service} ${address}`;
        t.true((after[key] ?? 0) > (before[key] ?? 0), `${key}: rq_total did not move`);
      }
    }
  },
);

test.serial(
  "REST through Envoy: GET matches the gRPC call, POST /orders creates an order, unknown ids are 404",
  async (t) => {
    await waitHealthy(SERVICE_KINDS);
    const c = clients();
    t.teardown(c.close);
    const user = await newUser(c);
    const product = await newProduct(c, 20);
    const http = `http://${front()}`;

    const rest = await fetch(`${http}/users/${user.userId}`);
    t.is(rest.status, 200);
    t.regex(rest.headers.get("content-type") ?? "", /^application\/json/);
    const restUser = ((await rest.json()) as { user: Record<string, string> }).user;
    const grpcUser = (await c.users.getUser({ userId: user.userId })).user as User;
    t.deepEqual(
      {
        ...restUser,
        create_time: Date.parse(restUser.create_time as string),
        update_time: Date.parse(restUser.update_time as string),
      },
      {
        user_id: grpcUser.userId,
        email: grpcUser.email,
        display_name: grpcUser.displayName,
        create_time: grpcUser.createTime?.getTime(),
        update_time: grpcUser.updateTime?.getTime(),
      },
    );

    const restProduct = (await (await fetch(`${http}/products/${product.productId}`)).json()) as {
      product: { product_id: string; name: string; stock_quantity: number; price: object };
    };
    const grpcProduct = (await c.products.getProduct({ productId: product.productId }))
      .product as Product;
    t.like(restProduct.product, {
      product_id: grpcProduct.productId,
      name: grpcProduct.name,
      stock_quantity: grpcProduct.stockQuantity,
      price: { currency_code: "EUR", amount_minor: "1250" },
    });

    const body = {
      user_id: user.userId,
      lines: [{ product_id: product.productId, quantity: 2 }],
      request_id: tag("rest-order"),
    };
    const post = () =>
      fetch(`${http}/orders`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
    const created = await post();
    t.is(created.status, 200);
    const { order } = (await created.json()) as {
      order: { order_id: string; state: string; user_id: string; total: object };
    };
    t.like(order, {
      user_id: user.userId,
      state: "ORDER_STATE_CONFIRMED",
      total: { currency_code: "EUR", amount_minor: "2500" },
    });
    const stored = (await c.orders.getOrder({ orderId: order.order_id })).order;
    t.is(stored?.state, OrderState.ORDER_STATE_CONFIRMED);
    t.deepEqual(
      stored?.lines.map((l) => [l.productId, l.quantity]),
      [[product.productId, 2]],
    );
    // The same request_id again: the same order, no second one.
    const again = (await (await post()).json()) as { order: { order_id: string } };
    t.is(again.order.order_id, order.order_id);
    t.is(
      (await c.products.getProduct({ productId: product.productId })).product?.stockQuantity,
      18,
    );

    for (const [urlPath, reason] of [
      ["/users/usr_missing", "USER_NOT_FOUND"],
      ["/products/prd_missing", "PRODUCT_NOT_FOUND"],
      ["/orders/ord_missing", "ORDER_NOT_FOUND"],
    ] as const) {
      const missing = await fetch(`${http}${urlPath}`);
      t.is(missing.status, 404, urlPath);
      const status = (await missing.json()) as { code: number; details: { reason?: string }[] };
      t.is(status.code, Code.NOT_FOUND, urlPath);
      t.is(status.details.find((detail) => detail.reason)?.reason, reason, urlPath);
    }
  },
);

/** gRPC-Web frames: 1 flag byte (0x80 = trailers), a 4-byte big-endian length, the payload. */
function grpcWebFrames(body: Buffer): { trailer: boolean; payload: Buffer }[] {
  const frames: { trailer: boolean; payload: Buffer }[] = [];
  let offset = 0;
  while (offset < body.length) {
    if (body.length - offset < 5) throw new Error(`truncated frame header at ${offset}`);
    const flags = body[offset] as number;
    const length = body.readUInt32BE(offset + 1);
    if (offset + 5 + length > body.length) throw new Error(`truncated frame at ${offset}`);
    frames.push({
      trailer: (flags & 0x80) !== 0,
      payload: body.subarray(offset + 5, offset + 5 + length),
    });
    offset += 5 + length;
  }
  return frames;
}

const trailerMap = (payload: Buffer) =>
  Object.fromEntries(
    payload
      .toString("latin1")
      .split("\r\n")
      .filter(Boolean)
      .map((entry) => {
        const colon = entry.indexOf(":");
        return [entry.slice(0, colon).trim().toLowerCase(), entry.slice(colon + 1).trim()];
      }),
  );

test.serial("a hand-built gRPC-Web request gets a well-formed gRPC-Web response", async (t) => {
  await waitHealthy(["user"]);
  const c = clients();
  t.teardown(c.close);
  const user = await newUser(c);

  const call = async (userId: string, requestId: string) => {
    const message = Buffer.from(GetUserRequest.encode({ userId }).finish());
    const header = Buffer.alloc(5);
    header.writeUInt32BE(message.length, 1);
    const response = await fetch(`http://${front()}/shop.user.v1.UserService/GetUser`, {
      method: "POST",
      headers: {
        "content-type": "application/grpc-web+proto",
        accept: "application/grpc-web+proto",
        "x-grpc-web": "1",
        "x-request-id": requestId,
      },
      body: Buffer.concat([header, message]),
    });
    return { response, body: Buffer.from(await response.arrayBuffer()) };
  };

  const id = tag("grpc-web");
  const ok = await call(user.userId, id);
  t.is(ok.response.status, 200);
  t.is(ok.response.headers.get("content-type"), "application/grpc-web+proto");
  const frames = grpcWebFrames(ok.body);
  t.deepEqual(
    frames.map((frame) => frame.trailer),
    [false, true],
    "one message frame, then one trailer frame",
  );
  const reply = GetUserResponse.decode((frames[0] as { payload: Buffer }).payload);
  t.is(reply.user?.userId, user.userId);
  t.is(reply.user?.email, user.email);
  t.is(trailerMap((frames[1] as { payload: Buffer }).payload)["grpc-status"], "0");
  const [logged] = await loggedRequests(id, 1);
  t.like(logged, { upstream_cluster: "user", protocol: "HTTP/1.1", response_code: 200 });

  // An error is trailers only: grpc-status in the headers or in a lone trailer frame.
  const missing = await call("usr_missing", tag("grpc-web-missing"));
  t.is(missing.response.status, 200);
  const errorFrames = grpcWebFrames(missing.body);
  t.false(
    errorFrames.some((frame) => !frame.trailer),
    "no message frame on an error",
  );
  const trailers = {
    ...Object.fromEntries(missing.response.headers),
    ...(errorFrames[0] ? trailerMap(errorFrames[0].payload) : {}),
  };
  t.is(trailers["grpc-status"], String(Code.NOT_FOUND));
  t.regex(decodeURIComponent(trailers["grpc-message"] ?? ""), /usr_missing/);
});

test.serial(
  "the order replicas call user and product directly, round_robin over their replicas",
  async (t) => {
    await waitHealthy(SERVICE_KINDS);
    const c = clients();
    t.teardown(c.close);
    const user = await newUser(c);
    const product = await newProduct(c, 100);
    const prefix = tag("direct");
    const calls = 10;
    for (let i = 0; i < calls; i++) {
      await c.orders.createOrder(
        { userId: user.userId, lines: [line(product.productId, 1)], requestId: `${prefix}-${i}` },
        withId(`${prefix}-${i}`),
      );
    }

    // Envoy carried the CreateOrder calls only: the calls they made did not pass it.
    const logged = await loggedRequests(prefix, calls);
    t.deepEqual(
      [...new Set(logged.map((entry) => entry.path))],
      ["/shop.order.v1.OrderService/CreateOrder"],
    );

    // The order service passes the caller's x-request-id on, so each replica's own log shows which
    // of these calls it served.
    const served = async (service: ServiceKind, method: string, expected: number) => {
      const counts: Record<string, number> = {};
      const deadline = Date.now() + 5_000;
      for (;;) {
        for (const replica of mesh.plan.replicas.filter((r) => r.service === service)) {
          const log = await readFile(path.join(mesh.plan.logDir, `${replica.name}.log`), "utf8");
          counts[replica.name] = log
            .split("\n")
            .filter((entry) => entry.includes(prefix) && entry.includes(method)).length;
        }
        if (sum(counts) >= expected || Date.now() > deadline) return counts;
        await sleep(100);
      }
    };
    // Each order makes one user call (GetUser) and two product calls (ReserveStock, then
    // CommitReservation): one order replica alone alternates the product replicas per call.
    const users = await served("user", "/shop.user.v1.UserService/GetUser", calls);
    const products = await served("product", "/shop.product.v1.ProductService/", 2 * calls);
    t.log({ "user calls": users, "product calls": products });
    for (const [name, count] of Object.entries({ ...users, ...products })) {
      t.true(count > 0, `${name} served none of the direct calls`);
    }
    t.is(sum(users), calls);
    t.is(sum(products), 2 * calls);
  },
);

test.serial(
  "a replica that reports NOT_SERVING gets no new traffic within the health interval",
  async (t) => {
    // Honest flip: only the health status changes. The replica runs in this process so the test can
    // call health.setStatus; it keeps serving every RPC, so only Envoy's health check can divert
    // traffic from it. (SIGTERM would not do: grpc-js refuses new streams on shutdown, which diverts
    // traffic whatever the health check says.)
    await waitHealthy(["product"]);
    const name = "product-2";
    const address = mesh.plan.addresses.product[1] as string;
    await stopReplica(name, "SIGTERM");
    const replica = await inProcessReplica(name, createProductService());
    t.teardown(async () => {
      await replica.stop();
      await restartReplica(name);
    });
    await waitHealthy(["product"]);
    const c = clients();
    t.teardown(c.close);
    const product = await newProduct(c, 5);
    const interval = mesh.plan.envoy.healthCheckIntervalMs;
    const prefix = tag("not-serving");

    let flippedAt = 0;
    let flaggedAt = 0;
    let watching = true;
    const failures: unknown[] = [];
    const pending: Promise<unknown>[] = [];
    // When Envoy marks the replica unhealthy, as seen through its admin interface.
    const watcher = (async () => {
      while (watching && !flaggedAt) {
        const host = (await hostsOf("product")).find((h) => h.address === address);
        if (flippedAt && host?.flags.includes("failed_active_health_check")) flaggedAt = Date.now();
        await sleep(25);
      }
    })();
    const stream = 250;
    for (let i = 0; i < stream; i++) {
      if (i === 80) {
        flippedAt = Date.now();
        replica.server.health.setStatus("shop.product.v1.ProductService", "NOT_SERVING");
      }
      pending.push(
        c.products
          .getProduct({ productId: product.productId }, withId(`${prefix}-${i}`))
          .catch((error: unknown) => failures.push(error)),
      );
      await sleep(10);
    }
    await Promise.all(pending);
    await Promise.race([watcher, sleep(3_000)]);
    watching = false;
    await watcher;
    t.deepEqual(failures, [], "a NOT_SERVING replica still answers; no call may fail");

    const lines = await loggedRequests(prefix, stream);
    const onFlipped = lines
      .filter((entry) => entry.upstream_host === address)
      .map((entry) => Date.parse(entry.start_time));
    const last = Math.max(...onFlipped);
    t.log(
      `interval ${interval} ms; flagged ${flaggedAt - flippedAt} ms after the flip; ` +
        `last request on it ${last - flippedAt} ms after; ${onFlipped.length} of ${stream} on it`,
    );
    t.true(
      onFlipped.some((time) => time < flippedAt),
      "the replica had traffic before the flip",
    );
    t.true(flaggedAt > 0 && flaggedAt - flippedAt <= interval + 500, "flagged within an interval");
    // 500 ms of slack for the check's round trip and this machine's scheduling.
    t.true(last - flippedAt <= interval + 500, `traffic ${last - flippedAt} ms after the flip`);

    // SERVING again: back in within an interval, and it gets traffic again.
    replica.server.health.setStatus("shop.product.v1.ProductService", "SERVING");
    await waitHealthy(["product"], interval * 3);
    const backPrefix = tag("serving-again");
    for (let round = 0; round < 5; round++) {
      await Promise.all(
        [0, 1, 2, 3].map((k) =>
          c.products.getProduct(
            { productId: product.productId },
            withId(`${backPrefix}-${round}-${k}`),
          ),
        ),
      );
    }
    const back = await loggedRequests(backPrefix, 20);
    t.true(
      back.some((entry) => entry.upstream_host === address),
      "no traffic after SERVING",
    );
  },
);

test.serial(
  "concurrent CreateOrder retries through Envoy with one request_id create one order",
  async (t) => {
    await waitHealthy(SERVICE_KINDS);
    const c = clients({ retryCreateOrder: true });
    t.teardown(c.close);
    const user = await newUser(c);
    const product = await newProduct(c, 50);

    // order-2 does the work, then loses the reply: it answers UNAVAILABLE after CreateOrder has
    // written the order. Envoy retries UNAVAILABLE on another replica, and the client retries what
    // Envoy gives up on; request_id must turn every repeat into the same order.
    const name = "order-2";
    let lost = 0;
    const base = createOrderService({
      userAddr: mesh.plan.addresses.user.join(","),
      productAddr: mesh.plan.addresses.product.join(","),
    });
    const lossy: ServiceModule = {
      ...base,
      implement(db, logger) {
        const implementation = base.implement(db, logger);
        const { createOrder } = implementation.handlers as Record<
          string,
          (request: unknown, ctx: unknown) => Promise<unknown>
        >;
        return {
          ...implementation,
          handlers: {
            ...implementation.handlers,
            createOrder: async (request: unknown, ctx: unknown) => {
              await createOrder?.(request, ctx);
              lost++;
              throw new ServiceError(
                Code.UNAVAILABLE,
                "the reply was lost after the order was written",
              );
            },
          },
        };
      },
    };
    await stopReplica(name, "SIGTERM");
    const replica = await inProcessReplica(name, lossy);
    t.teardown(async () => {
      await replica.stop();
      await restartReplica(name);
    });
    await waitHealthy(["order"]);

    const retriesBefore = await counter("cluster.order.upstream_rq_retry");
    const requestId = tag("dup");
    const attempts = 12;
    const results = await Promise.allSettled(
      Array.from({ length: attempts }, (_, i) =>
        c.orders.createOrder(
          { userId: user.userId, lines: [line(product.productId, 2)], requestId },
          withId(`${requestId}-${i}`),
        ),
      ),
    );
    const failed = results.flatMap((result) =>
      result.status === "rejected" ? [result.reason] : [],
    );
    t.deepEqual(failed, []);
    const ids = new Set(
      results.map((result) => (result.status === "fulfilled" ? result.value.order?.orderId : "")),
    );
    t.is(ids.size, 1, `one order id for every attempt: ${[...ids]}`);

    const listed = await c.orders.listOrders({ userId: user.userId, pageSize: 50, pageToken: "" });
    t.deepEqual(
      listed.orders.map((order) => [order.orderId, order.state]),
      [[[...ids][0], OrderState.ORDER_STATE_CONFIRMED]],
    );
    t.is(
      (await c.products.getProduct({ productId: product.productId })).product?.stockQuantity,
      48,
    );

    const retries = (await counter("cluster.order.upstream_rq_retry")) - retriesBefore;
    const lines = await loggedRequests(requestId, attempts);
    t.log(`${lost} replies lost; Envoy retried ${retries} times; ${lines.length} requests logged`);
    t.true(lost > 0, "no attempt reached the replica that loses replies");
    t.true(retries > 0, "Envoy retried nothing");
    t.true(
      lines.some((entry) => entry.attempts > 1),
      "no request took a second attempt",
    );
  },
);

test.serial(
  "killing a product replica under a steady stream of GetProduct fails no call",
  async (t) => {
    await waitHealthy(["product"]);
    const name = "product-2";
    const address = mesh.plan.addresses.product[1] as string;
    let killedAt = 0;
    t.teardown(async () => {
      if (killedAt) await restartReplica(name);
    });
    const c = clients();
    t.teardown(c.close);
    const product = await newProduct(c, 5);
    const retriesBefore = await counter("cluster.product.upstream_rq_retry");
    const prefix = tag("kill");

    // 300 calls, one every 10 ms, from a client that never retries: Envoy has to cover the kill.
    const calls = 300;
    const failures: string[] = [];
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < calls; i++) {
      if (i === 100) {
        process.kill(replicaPid(name), "SIGKILL");
        killedAt = Date.now();
      }
      pending.push(
        c.products
          .getProduct({ productId: product.productId }, withId(`${prefix}-${i}`))
          .catch((error: unknown) => failures.push(`#${i}: ${(error as Error).message}`)),
      );
      await sleep(10);
    }
    await Promise.all(pending);
    t.deepEqual(failures, [], "every call succeeded");

    const lines = await loggedRequests(prefix, calls);
    t.true(
      lines.every((entry) => entry.grpc_status === 0),
      "Envoy logged a failure",
    );
    const retries = (await counter("cluster.product.upstream_rq_retry")) - retriesBefore;
    const onKilled = lines.filter(
      (entry) => entry.upstream_host === address && Date.parse(entry.start_time) > killedAt + 50,
    );
    const host = (await hostsOf("product")).find((h) => h.address === address);
    t.log(
      `Envoy retried ${retries} calls; ${lines.filter((e) => e.attempts > 1).length} took more ` +
        `than one attempt; the killed replica is flagged ${host?.flags.join(", ") || "(none yet)"}`,
    );
    t.deepEqual(onKilled, [], "no call was answered by the killed replica after the kill");
    t.true(retries > 0, "Envoy retried nothing: did the kill land mid-stream?");
    t.true((host?.flags.length ?? 0) > 0, "Envoy still counts the killed replica as healthy");
  },
);

// ---------------------------------------------------------------------------------------------
// Docker: the same topology for people with Docker (there is no Docker engine here)

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  deploy?: { replicas?: number };
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

test("deploy/compose.yaml runs the mesh's topology: the services, ports and wiring Envoy expects", async (t) => {
  const composeFile = path.join(repoRoot, "deploy/compose.yaml");
  const docker = await exec("docker", ["compose", "version"]).catch((error: Error) => ({
    code: -1,
    stdout: "",
    stderr: error.message,
  }));
  if (docker.code === 0) {
    const config = await exec("docker", ["compose", "-f", composeFile, "config", "-q"]);
    t.is(config.code, 0, config.stderr);
  } else {
    t.log(
      `docker compose is not available (${docker.stderr.trim().split("\n")[0]}); ` +
        "checking the file's structure against the topology instead",
    );
  }

  const compose = parse(await readFile(composeFile, "utf8"), { merge: true }) as {
    services: Record<string, ComposeService>;
    volumes: Record<string, unknown>;
  };
  const services = compose.services;
  const topology = composeTopology();
  const replicas = localTopology().services.user?.length;
  const deployDir = path.dirname(composeFile);

  for (const kind of SERVICE_KINDS) {
    const [endpoint] = topology.services[kind] ?? [];
    // Envoy's STRICT_DNS cluster resolves the compose service's name: every replica is a host.
    t.is(endpoint?.host, kind, `envoy.compose.yaml must resolve the compose service "${kind}"`);
    const service = services[kind] as ComposeService;
    t.truthy(service, `compose service ${kind}`);
    t.is(service.deploy?.replicas, replicas, `${kind}: as many replicas as npm run mesh`);
    t.like(service.environment, {
      SHOP_SERVICE: kind,
      SHOP_HOST: "0.0.0.0",
      SHOP_PORT: String(endpoint?.port),
    });
    t.deepEqual(service.healthcheck?.test.slice(-1), ["scripts/lib/probe.ts"]);
    t.is(path.resolve(deployDir, service.build?.context ?? ""), path.resolve(repoRoot));
    // One database per service, shared by its replicas, migrated once before they start.
    t.deepEqual(service.volumes, [`${kind}-data:/data`]);
    t.true(`${kind}-data` in compose.volumes);
    const migrate = services[`${kind}-migrate`] as ComposeService;
    t.deepEqual(migrate?.volumes, [`${kind}-data:/data`]);
    t.is(migrate?.environment?.SHOP_SERVICE, kind);
    t.deepEqual(migrate?.command?.slice(-1), ["scripts/lib/migrate.ts"]);
    t.is(service.depends_on?.[`${kind}-migrate`]?.condition, "service_completed_successfully");
  }

  // The order replicas dial the others by the same DNS names, balanced round_robin.
  const dns = (kind: ServiceKind) =>
    `${topology.services[kind]?.[0]?.host}:${topology.services[kind]?.[0]?.port}`;
  t.like(services.order?.environment, {
    SHOP_USER_ADDR: dns("user"),
    SHOP_PRODUCT_ADDR: dns("product"),
  });
  t.like(services.seed?.environment, {
    SHOP_USER_ADDR: dns("user"),
    SHOP_PRODUCT_ADDR: dns("product"),
  });

  // Envoy: the pinned image of the local binary, the generated compose config, the descriptor
  // where that config loads it, the listener published on loopback.
  const envoy = services.envoy as ComposeService;
  const version = (await exec(tool("envoy"), ["--version"])).stdout.match(
    /\/(\d+\.\d+\.\d+)\//,
  )?.[1];
  t.is(envoy.image, `envoyproxy/envoy:v${version}`);
  t.deepEqual(envoy.command?.slice(0, 3), ["envoy", "-c", "/etc/envoy/envoy.yaml"]);
  const mounts = Object.fromEntries(
    (envoy.volumes ?? []).map((volume) => {
      const [host, container] = volume.split(":");
      return [container, path.resolve(deployDir, host as string)];
    }),
  );
  t.is(mounts["/etc/envoy/envoy.yaml"], path.join(repoRoot, "deploy/envoy/envoy.compose.yaml"));
  t.is(mounts[path.dirname(topology.descriptorPath)], path.join(repoRoot, "gen/descriptor"));
  t.deepEqual(envoy.ports, [`127.0.0.1:8080:${topology.listen.port}`]);
  for (const kind of SERVICE_KINDS) t.is(envoy.depends_on?.[kind]?.condition, "service_healthy");
});

test("the Dockerfile installs production dependencies and copies every file a service imports", async (t) => {
  const dockerfile = await readFile(path.join(repoRoot, "Dockerfile"), "utf8");
  t.regex(dockerfile, /^FROM node:20-bookworm-slim AS deps$/m);
  t.regex(dockerfile, /^RUN npm ci --omit=dev\b/m);
  t.regex(dockerfile, /services\/\$\{SHOP_SERVICE:\?/);
  const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+) (\S+)$/gm)].flatMap((match) =>
    (match[1] as string).split(/\s+/),
  );

  const pkg = JSON.parse(await readFile(path.join(repoRoot, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
  };
  t.true("tsx" in pkg.dependencies, "the image runs TypeScript with tsx, so it is a dependency");

  // Every file reachable by import from what the containers run.
  const entries = [
    ...SERVICE_KINDS.map((kind) => `services/${kind}/main.ts`),
    "scripts/lib/migrate.ts",
    "scripts/lib/probe.ts",
    "scripts/lib/seed.ts",
  ];
  const seen = new Set<string>();
  const packages = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = await readFile(path.join(repoRoot, file), "utf8");
    for (const [, specifier] of source.matchAll(/(?:from|import)\s+"([^"]+)"/g)) {
      if (!specifier || specifier.startsWith("node:")) continue;
      if (specifier.startsWith(".")) {
        queue.push(path.join(path.dirname(file), specifier).replace(/\.js$/, ".ts"));
      } else {
        const parts = specifier.split("/");
        packages.add(
          specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] as string),
        );
      }
    }
  }
  const outside = [...seen].filter(
    (file) => !copied.some((source) => file === source || file.startsWith(`${source}/`)),
  );
  t.deepEqual(outside, [], "files the containers import but the Dockerfile does not copy");
  t.deepEqual(
    [...packages].filter((name) => !(name in pkg.dependencies)).sort(),
    [],
    "packages the containers import that npm ci --omit=dev leaves out",
  );
  // Reflection reads the descriptor set at run time (kit/descriptor.ts).
  t.true(copied.includes("gen/descriptor"));
  t.true(readdirSync(path.join(repoRoot, "gen/descriptor")).includes("shop.binpb"));
});
