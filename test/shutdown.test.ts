import type { StdioOptions } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer, type Socket } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import knex from "knex";
import { HealthCheckResponse_ServingStatus, HealthService } from "../gen/ts/health/v1/health.js";
import { CancelOrderRequest } from "../gen/ts/shop/order/v1/order.js";
import {
  GetProductRequest,
  ListProductsRequest,
  ProductServiceService,
} from "../gen/ts/shop/product/v1/product.js";
import { createClient } from "../kit/client/index.js";
import { Code, ServiceError } from "../kit/errors.js";
import type { ServerMiddleware } from "../kit/middleware/index.js";
import type { Logger } from "../kit/observability/logger.js";
import { startService } from "../kit/runtime/index.js";
import { serve } from "../kit/server.js";
import type { ServiceImplementation } from "../kit/service.js";
import { addProduct, addUser } from "../scripts/lib/seed.js";
import { createProductService } from "../services/product/service.js";
import { rawClient } from "./helpers/bad-input.js";
import { serviceProcess } from "./helpers/build.js";
import { until } from "./helpers/eventually.js";
import { captureLogger, clientsFor, orderLine, start, startFleet } from "./helpers/fleet.js";

const GRACE_MS = 300;

/** Runs nothing else for `ms`, as a machine too busy to run this process would. */
function holdEventLoop(ms: number): void {
  const end = performance.now() + ms;
  while (performance.now() < end);
}

/** Resolves "stopped" once `stopping` does, or "still running" after 15 s. */
const stoppedIn15s = (stopping: Promise<void>) =>
  Promise.race([
    stopping.then(() => "stopped" as const),
    new Promise<"still running">((resolve) => setTimeout(resolve, 15_000, "still running").unref()),
  ]);

/**
 * A user, product and order service whose `rpc` (ReserveStock unless told) stays in its handler
 * until the test ends, with each service's grace period as `grace` says; `reserving()` counts the
 * calls held.
 */
async function stuckOnReserveStock(
  t: ExecutionContext,
  grace: { product?: number; order?: number } = {},
  rpc = "ReserveStock",
  productLogger?: Logger,
) {
  let reserving = 0;
  let giveUp = (_: Error) => {};
  const stuck = new Promise<never>((_, reject) => {
    giveUp = reject;
  });
  stuck.catch(() => {});
  t.teardown(() => giveUp(new Error("the test is over")));
  const holdReserve: ServerMiddleware = {
    name: "hold-reserve",
    wrap: (method, next) =>
      method.rpc !== rpc
        ? next
        : async (_request, ctx) => {
            reserving++;
            // As a handler waiting on its database would: it ends when its call is cut.
            const cut = new Promise<never>((_, reject) =>
              ctx.signal.addEventListener("abort", () => reject(ctx.signal.reason), {
                once: true,
              }),
            );
            return Promise.race([stuck, cut]);
          },
  };
  const graceOf = (ms?: number) => (ms === undefined ? {} : { shutdownGraceMs: ms });
  const fleet = await startFleet(t, {
    middleware: { product: [holdReserve] },
    ...(productLogger && { loggers: { product: productLogger } }),
    config: { product: graceOf(grace.product), order: graceOf(grace.order) },
    // The reconciler at its default pace: it must not settle the held orders meanwhile.
    order: { reconcileMs: 5_000 },
  });
  const shopper = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 2 });
  const place = (requestId: string) =>
    fleet.orders.createOrder(
      { userId: shopper.userId, lines: [orderLine(mug.productId, 1)], requestId },
      { timeoutMs: 20_000 },
    );
  return { product: fleet.product, order: fleet.order, place, reserving: () => reserving };
}

test("a library's stream still open when the grace period ends is closed, and the shutdown completes", async (t) => {
  const product = await startService(createProductService(), {
    host: "127.0.0.1",
    port: 0,
    database: ":memory:",
    logLevel: "silent",
    shutdownGraceMs: 300,
  });
  t.teardown(() => product.stop());
  const health = createClient(HealthService, product.server.address);
  t.teardown(() => health.close());

  const statuses: HealthCheckResponse_ServingStatus[] = [];
  // Watches past NOT_SERVING, as a client that only cares about the stream's end would.
  const watch = (async () => {
    for await (const update of health.watch({ service: "" }, { timeoutMs: 60_000 })) {
      statuses.push(update.status);
    }
  })();
  await until("the watch to report SERVING", () => statuses.length > 0);

  t.is(await stoppedIn15s(product.server.shutdown()), "stopped");

  const ended = await t.throwsAsync(watch, { instanceOf: ServiceError });
  t.log(ended && Code[ended.code], ended?.message);
  t.true(
    ended?.code === Code.UNAVAILABLE || ended?.code === Code.CANCELLED,
    `the watch ended ${ended && Code[ended.code]}: ${ended?.message}`,
  );
  t.deepEqual(statuses, [
    HealthCheckResponse_ServingStatus.SERVING,
    HealthCheckResponse_ServingStatus.NOT_SERVING,
  ]);
});

test("our stream still open when the grace period ends answers UNAVAILABLE, and is logged so", async (t) => {
  const { logger, lines } = captureLogger("order");
  const fleet = await startFleet(t, { loggers: { order: logger } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 2 });
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "watched-over-a-shutdown",
  });
  let updates = 0;
  const watch = (async () => {
    for await (const _ of fleet.orders.watchOrder(
      { orderId: order?.orderId ?? "" },
      { timeoutMs: 60_000 },
    )) {
      updates++;
    }
  })();
  await until("the watch to stream the order", () => updates > 0);

  t.is(await stoppedIn15s(fleet.order.server.shutdown()), "stopped");
  const ended = await t.throwsAsync(watch, { instanceOf: ServiceError });
  t.like(ended, { code: Code.UNAVAILABLE, details: { reason: "SHUTTING_DOWN" } });
  const logged = lines.filter((line) => String(line.method).endsWith("/WatchOrder"));
  t.deepEqual(
    logged.map((line) => line.code),
    ["UNAVAILABLE"],
  );
});

test("a call its server cuts off at the grace period's end is UNAVAILABLE to the service that made it, never CANCELLED", async (t) => {
  const { logger, lines } = captureLogger("product");
  const { product, place, reserving } = await stuckOnReserveStock(
    t,
    { product: 300 },
    "ReserveStock",
    logger,
  );
  const placing = place("cut-off");
  await until("ReserveStock to be in its handler", () => reserving() === 1);
  t.is(await stoppedIn15s(product.server.shutdown()), "stopped");

  // The caller did not cancel: the product service went away, and the order says so.
  const refused = await t.throwsAsync(placing, { instanceOf: ServiceError });
  t.like(refused, {
    code: Code.UNAVAILABLE,
    details: { reason: "DEPENDENCY_UNAVAILABLE", metadata: { dependency: "product" } },
  });
  // And product's log says the shutdown cut it, not that its caller cancelled it.
  const cutOff = lines.filter((line) => String(line.method).endsWith("/ReserveStock"));
  t.deepEqual(
    cutOff.map((line) => line.code),
    ["UNAVAILABLE"],
  );
});

/**
 * A product service process on port 0 with `env` over its defaults, its stdout collected;
 * resolves once it serves.
 */
async function productProcess(t: ExecutionContext, env: Record<string, string>) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-shutdown-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const child = await serviceProcess(
    t,
    { SHOP_SERVICE: "product", SHOP_PORT: "0", SHOP_METRICS: "false", SHOP_DATA_DIR: dir, ...env },
    ["ignore", "pipe", "inherit"],
  );
  let output = "";
  child.stdout?.on("data", (chunk) => {
    output += chunk;
  });
  const exited = once(child, "exit");
  await until("the product service to serve", () => output.includes('"msg":"serving"'));
  const address = /"address":"([^"]+)"/.exec(output)?.[1] ?? "";
  return { child, exited, address, output: () => output };
}

/**
 * A product process (or `entry`) whose PostgreSQL takes the connection and never answers, so it
 * stays starting; resolves once its first connection has arrived.
 */
async function productStuckStarting(
  t: ExecutionContext,
  stdio: StdioOptions,
  entry = "services/main.ts",
) {
  const sockets = new Set<Socket>();
  const hung = createServer((socket) => sockets.add(socket));
  await new Promise<void>((resolve) => hung.listen(0, "127.0.0.1", resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    hung.close();
  });
  const { port } = hung.address() as AddressInfo;
  const child = await serviceProcess(
    t,
    {
      SHOP_SERVICE: "product",
      SHOP_PORT: "0",
      SHOP_METRICS: "false",
      SHOP_DATABASE_URL: `postgres://shop:secret@127.0.0.1:${port}/shop`,
    },
    stdio,
    entry,
  );
  let stderr = "";
  child.stderr?.on("data", (chunk) => {
    stderr += chunk;
  });
  const exited = once(child, "exit");
  await until("the service to connect to its database", () => sockets.size > 0);
  return { child, exited, stderr: () => stderr };
}

// Node ignores SIGTERM as a container's PID 1 unless a handler takes it, and the process had none
// until it served: a pod stuck in its migration took its whole grace period to delete.
test("SIGTERM before the process serves: it stops at once, exit 0, with one line saying so", async (t) => {
  const { child, exited, stderr } = await productStuckStarting(t, ["ignore", "ignore", "pipe"]);
  child.kill("SIGTERM");
  t.deepEqual(await exited, [0, null], stderr());
  t.is(stderr(), "product: SIGTERM before serving: stopped\n");
});

test("SIGTERM while scripts/migrate.ts waits for its database: it stops at once, exit 1", async (t) => {
  const { child, exited, stderr } = await productStuckStarting(
    t,
    ["ignore", "ignore", "pipe"],
    "scripts/migrate.ts",
  );
  child.kill("SIGTERM");
  t.deepEqual(await exited, [1, null], stderr());
  t.is(stderr(), "migrate: SIGTERM: stopped\n");
});

test("the launcher gone before the process serves: it stops rather than start as an orphan", async (t) => {
  const { child, exited, stderr } = await productStuckStarting(t, [
    "ignore",
    "ignore",
    "pipe",
    "ipc",
  ]);
  child.disconnect();
  t.deepEqual(await exited, [0, null], stderr());
  t.is(stderr(), "product: launcher gone before serving: stopped\n");
});

test("a second SIGTERM while calls finish changes nothing: the process still drains and exits 0", async (t) => {
  const { child, exited, address, output } = await productProcess(t, {
    SHOP_SHUTDOWN_GRACE_MS: "1500",
  });
  // A stream that lasts until the grace period's end keeps the drain going.
  const health = createClient(HealthService, address);
  t.teardown(() => health.close());
  let updates = 0;
  const watch = (async () => {
    for await (const _ of health.watch({ service: "" }, { timeoutMs: 60_000 })) updates++;
  })().catch(() => {});
  await until("the watch to report", () => updates > 0);

  child.kill("SIGTERM");
  await until("the shutdown to begin", () => output().includes("shutting down"));
  child.kill("SIGTERM");
  const [code, signal] = await exited;
  await watch;
  t.deepEqual([code, signal], [0, null], output());
  t.true(output().includes('"msg":"already shutting down"'), output());
  t.true(output().includes('"msg":"stopped"'), output());
});

// On a busy machine the event loop can be held up past the grace period's end and the cut that
// follows it: both timers then come due in one turn. The call must still answer before the cut.
// The test that holds the loop runs alone, before the file's others begin.
for (const heldUp of [false, true]) {
  const when = heldUp ? ", even with the event loop held up across its end," : "";
  (heldUp ? test.serial : test)(
    `a write still waiting for SQLite's lock when the grace period ends answers UNAVAILABLE${when} and never lands after its call was cut`,
    async (t) => {
      const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-shutdown-"));
      t.teardown(() => rm(dir, { recursive: true, force: true }));
      const database = path.join(dir, "product.sqlite");
      let creating = false;
      const seen: ServerMiddleware = {
        name: "seen",
        wrap: (method, next) =>
          method.rpc !== "CreateProduct"
            ? next
            : (request, ctx) => {
                creating = true;
                return next(request, ctx);
              },
      };
      const product = await start(t, createProductService(), {
        database,
        middleware: [seen],
        config: { shutdownGraceMs: GRACE_MS },
      });
      const { products } = clientsFor(t, { product: product.server.address });
      // Another writer of the file (a second replica, a backup) holds its lock past the grace period.
      const locker = knex({
        client: "better-sqlite3",
        connection: { filename: database },
        useNullAsDefault: true,
      });
      t.teardown(() => locker.destroy());
      await locker.raw("BEGIN IMMEDIATE");

      const created = addProduct(products, { name: "Cut off" });
      await until("CreateProduct to be in its handler", () => creating);
      const stopping = product.server.shutdown();
      if (heldUp) setTimeout(() => holdEventLoop(GRACE_MS + 600), GRACE_MS - 100);
      t.is(await stoppedIn15s(stopping), "stopped");
      const refused = await t.throwsAsync(created, { instanceOf: ServiceError });
      t.like(refused, { code: Code.UNAVAILABLE, details: { reason: "SHUTTING_DOWN" } });

      // The lock comes free after the cut; the database closes once nothing uses it.
      await locker.raw("ROLLBACK");
      await product.stop();
      const kept = await locker("products").where({ name: "Cut off" }).count({ n: "*" });
      t.is(Number(kept[0]?.n), 0, "a call its caller saw cut off wrote nothing");
    },
  );
}

test("a CreateOrder still waiting on its stock when the order service's grace period ends answers ORDER_NOT_SETTLED, with or without its request_id", async (t) => {
  const { order, place, reserving } = await stuckOnReserveStock(t, { order: 300 });
  const placing = [place("cut-by-the-grace"), place("")];
  await until("both orders to be reserving their stock", () => reserving() === 2);
  t.is(await stoppedIn15s(order.server.shutdown()), "stopped");

  // Their orders are written and may yet be confirmed: the callers learn that, and how to settle
  // them, rather than an UNAVAILABLE they would read as "nothing was placed".
  const [withKey, withoutKey] = await Promise.all(
    placing.map((call) => t.throwsAsync(call, { instanceOf: ServiceError })),
  );
  t.like(withKey, {
    code: Code.ABORTED,
    details: { reason: "ORDER_NOT_SETTLED", metadata: { request_id: "cut-by-the-grace" } },
  });
  t.like(withoutKey, { code: Code.ABORTED, details: { reason: "ORDER_NOT_SETTLED" } });
  t.truthy(withoutKey?.details.metadata?.request_id, "the request_id the call was given");
  t.truthy(withoutKey?.details.metadata?.order_id);
});

test("a CancelOrder still giving its stock back when the order service's grace period ends answers UNAVAILABLE, never CANCELLED", async (t) => {
  const { order, place, reserving } = await stuckOnReserveStock(
    t,
    { order: 300 },
    "ReleaseReservation",
  );
  const placed = (await place("cancel-cut-by-the-grace")).order;
  // A plain grpc-js client, which reads the status as sent: the kit's clients take a CANCELLED
  // they did not ask for as UNAVAILABLE themselves.
  const raw = rawClient(t, order.server.address);
  const cancelling = raw(
    "/shop.order.v1.OrderService/CancelOrder",
    CancelOrderRequest.encode({ orderId: placed?.orderId ?? "" }).finish(),
  );
  await until("the cancel to be giving the stock back", () => reserving() === 1);
  t.is(await stoppedIn15s(order.server.shutdown()), "stopped");

  // The cancel is recorded and finishes on any replica: the caller is told to call again, not
  // CANCELLED, which it would take for its own and which neither Envoy nor clients retry.
  const { error } = await cancelling;
  t.like(error, { code: Code.UNAVAILABLE, details: { reason: "SHUTTING_DOWN" } }, error?.message);
});

test("a stopping process waits a few seconds for its last spans, not a silent collector's 10", async (t) => {
  // A collector that takes connections and never answers.
  const sockets = new Set<Socket>();
  const collector = createServer((socket) => {
    sockets.add(socket);
    socket.on("error", () => {});
  });
  await new Promise<void>((resolve) => collector.listen(0, "127.0.0.1", resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    collector.close();
  });
  const { child, exited, address, output } = await productProcess(t, {
    OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${(collector.address() as AddressInfo).port}`,
    OTEL_TRACES_SAMPLER: "always_on",
  });
  // A call, so that a span waits in the batch for the collector.
  const products = createClient(ProductServiceService, address);
  t.teardown(() => products.close());
  await products.listProducts(ListProductsRequest.fromPartial({}));

  const stopping = Date.now();
  child.kill("SIGTERM");
  const [code] = await exited;
  const tookMs = Date.now() - stopping;
  t.is(code, 0, output());
  t.true(output().includes('"msg":"gave up exporting the last spans"'), output());
  // The exporter alone would wait 10 s: the process gives it 3.
  t.true(tookMs < 8_000, `stopped in ${tookMs} ms`);
});

test("a call its caller cancelled is logged CANCELLED, even when its handler outlives the grace period", async (t) => {
  const { logger, lines } = captureLogger("product");
  const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
  let running = 0;
  // Neither handler heeds its signal, as one waiting on a statement would not.
  const service = {
    definition: ProductServiceService,
    handlers: {
      getProduct: async ({ productId }: { productId: string }) => {
        running++;
        await sleep(productId === "left" ? 600 : 900);
        throw new ServiceError(Code.NOT_FOUND, productId);
      },
    },
  } as unknown as ServiceImplementation;
  const server = await serve([service], {
    host: "127.0.0.1",
    port: 0,
    logger,
    shutdownGraceMs: 300,
  });
  // Both on one connection, as calls through Envoy are: the cut closes it under the second.
  const grpcClient = new grpc.Client(server.address, grpc.credentials.createInsecure());
  t.teardown(() => grpcClient.close());
  const request = (productId: string) =>
    grpcClient.makeUnaryRequest(
      "/shop.product.v1.ProductService/GetProduct",
      (message: { productId: string }) => Buffer.from(GetProductRequest.encode(message).finish()),
      (bytes: Buffer) => bytes,
      { productId },
      () => {},
    );
  const left = request("left");
  request("cut");
  await until("both calls to be in their handlers", () => running === 2);
  left.cancel();
  await sleep(50);
  t.is(await stoppedIn15s(server.shutdown()), "stopped");
  const calls = () => lines.filter((line) => String(line.method).endsWith("/GetProduct"));
  await until("both calls' lines", () => calls().length === 2).catch((error: Error) => {
    t.log(lines);
    throw error;
  });
  t.deepEqual(
    calls()
      .map((line) => line.code)
      .sort(),
    ["CANCELLED", "UNAVAILABLE"],
  );
});

test("a server told to announce its shutdown serves, NOT_SERVING, for that long, then refuses new calls", async (t) => {
  const product = await start(t, createProductService(), {
    config: { shutdownAnnounceMs: 1_500 },
  });
  const address = product.server.address;
  const mug = await addProduct(clientsFor(t, { product: address }).products);
  const stopping = product.server.shutdown();
  // A new connection, as a load balancer's next health check makes: NOT_SERVING, and calls still
  // served meanwhile, so none is refused before the balancer has taken the replica out.
  const late = clientsFor(t, { product: address });
  const health = createClient(HealthService, address);
  t.teardown(() => health.close());
  const { status } = await health.check({ service: "shop.product.v1.ProductService" });
  t.is(status, HealthCheckResponse_ServingStatus.NOT_SERVING);
  const { product: read } = await late.products.getProduct({ productId: mug.productId });
  t.is(read?.productId, mug.productId);
  await stopping;
  const refused = await t.throwsAsync(
    clientsFor(t, { product: address }).products.getProduct(
      { productId: mug.productId },
      { timeoutMs: 2_000 },
    ),
    { instanceOf: ServiceError },
  );
  t.true([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED].includes(refused?.code as Code));
});
