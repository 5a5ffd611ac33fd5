// Servers bound the age of a client connection (grpc.max_connection_age_ms), so a client that
// resolves a DNS name (a Kubernetes headless Service, a compose service) reconnects, resolves
// again and spreads over replicas added since it first connected.
import { once } from "node:events";
import http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import test from "ava";
import { HealthClient, HealthService } from "../gen/ts/health/v1/health.js";
import { WatchOrderRequest } from "../gen/ts/shop/order/v1/order.js";
import { createClient } from "../kit/client/index.js";
import { serverConfig } from "../kit/config.js";
import { Code, ServiceError } from "../kit/errors.js";
import { createLogger } from "../kit/observability/logger.js";
import { serve } from "../kit/server.js";
import { addProduct, addUser } from "../scripts/lib/seed.js";
import { tokenFor } from "./helpers/credentials.js";
import { until } from "./helpers/eventually.js";
import { orderLine, startFleet } from "./helpers/fleet.js";
import { grpcFrame, rawGrpcCall } from "./helpers/grpc-frame.js";

const logger = createLogger("connection-age", "silent");

/** Resolves with the state a READY channel moves to, or "READY" if it stays for `ms`. */
function leavesReady(channel: ReturnType<grpc.Client["getChannel"]>, ms: number): Promise<string> {
  return new Promise((resolve) =>
    channel.watchConnectivityState(grpc.connectivityState.READY, Date.now() + ms, (error) =>
      resolve(error ? "READY" : grpc.connectivityState[channel.getConnectivityState(false)]),
    ),
  );
}

async function connected(address: string): Promise<grpc.Client> {
  const client = new grpc.Client(address, grpc.credentials.createInsecure());
  await new Promise<void>((resolve, reject) =>
    client.waitForReady(Date.now() + 5_000, (error) => (error ? reject(error) : resolve())),
  );
  return client;
}

test("a server asks clients to reconnect once their connection reaches its maximum age", async (t) => {
  const server = await serve([], {
    host: "127.0.0.1",
    port: 0,
    logger,
    maxConnectionAgeMs: 300,
    maxConnectionAgeGraceMs: 200,
  });
  t.teardown(() => server.shutdown());
  const client = await connected(server.address);
  t.teardown(() => client.close());
  // grpc-js adds up to 10% jitter to the age; the GOAWAY takes the channel out of READY.
  t.not(await leavesReady(client.getChannel(), 3_000), "READY");

  // The next call connects again (a new resolution, for a DNS target) and succeeds.
  const health = createClient(HealthService, server.address);
  t.teardown(() => health.close());
  t.is((await health.check({ service: "" })).status, 1);
});

test("our stream on a connection at its maximum age ends UNAVAILABLE before the grace period cuts it", async (t) => {
  // Cut at the end of the grace period, a stream has no status: Envoy reports it INTERNAL.
  const fleet = await startFleet(t, {
    config: { order: { maxConnectionAgeMs: 1_000, maxConnectionAgeGraceMs: 60_000 } },
  });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 1 });
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "watched-past-connection-age",
  });
  const watch = async () => {
    let updates = 0;
    const ended = (async () => {
      for await (const _ of fleet.orders.watchOrder({ orderId: order?.orderId ?? "" })) updates++;
    })();
    await until("the watch to stream the order", () => updates > 0);
    return { ended };
  };
  const ended = await t.throwsAsync((await watch()).ended, { instanceOf: ServiceError });
  t.like(ended, { code: Code.UNAVAILABLE, details: { reason: "CONNECTION_CLOSING" } });
  // The caller watches again, on a new connection.
  const again = await t.throwsAsync((await watch()).ended, { instanceOf: ServiceError });
  t.like(again, { code: Code.UNAVAILABLE, details: { reason: "CONNECTION_CLOSING" } });
});

test("a health Watch on a connection at its maximum age ends UNAVAILABLE too", async (t) => {
  const server = await serve([], {
    host: "127.0.0.1",
    port: 0,
    logger,
    maxConnectionAgeMs: 1_000,
    maxConnectionAgeGraceMs: 60_000,
  });
  t.teardown(() => server.shutdown());
  const health = createClient(HealthService, server.address);
  t.teardown(() => health.close());
  const statuses: number[] = [];
  const ended = t.throwsAsync(
    (async () => {
      for await (const { status } of health.watch({ service: "" })) statuses.push(status);
    })(),
    { instanceOf: ServiceError },
  );
  t.like(await ended, { code: Code.UNAVAILABLE, details: { reason: "CONNECTION_CLOSING" } });
  t.deepEqual(statuses, [1]);
});

test("a stream on a connection older than a minute runs to the end of a shutdown's grace period", async (t) => {
  // A server that pinged its clients every 60 s dropped a draining connection at its next ping,
  // cutting its calls before the grace period ended. The client here sends no pings of its own.
  t.timeout(90_000);
  const server = await serve([], { host: "127.0.0.1", port: 0, logger, shutdownGraceMs: 10_000 });
  const health = new HealthClient(server.address, grpc.credentials.createInsecure());
  t.teardown(() => health.close());
  const watched = Date.now();
  const ended = new Promise<grpc.StatusObject>((resolve) => {
    const watch = health.watch({ service: "" });
    watch.on("data", () => {});
    watch.on("error", () => {});
    watch.on("status", resolve);
  });
  await new Promise((resolve) => setTimeout(resolve, 55_000));
  const stopped = server.shutdown();
  const status = await ended;
  t.is(status.code, Code.UNAVAILABLE, status.details);
  t.regex(status.details, /shutting down/);
  t.true(Date.now() - watched >= 64_000, "ended at the end of the grace period");
  await stopped;
});

test("without a maximum age a connection stays up", async (t) => {
  const server = await serve([], { host: "127.0.0.1", port: 0, logger });
  t.teardown(() => server.shutdown());
  const client = await connected(server.address);
  t.teardown(() => client.close());
  t.is(await leavesReady(client.getChannel(), 1_000), "READY");
});

test("services bound connection age by default, and SHOP_MAX_CONNECTION_AGE_MS sets it", (t) => {
  const saved = { ...process.env };
  t.teardown(() => {
    process.env = saved;
  });
  delete process.env.SHOP_MAX_CONNECTION_AGE_MS;
  delete process.env.SHOP_MAX_CONNECTION_AGE_GRACE_MS;
  t.like(serverConfig("user", 50051), {
    maxConnectionAgeMs: 300_000,
    maxConnectionAgeGraceMs: 30_000,
  });
  process.env.SHOP_MAX_CONNECTION_AGE_MS = "60000";
  process.env.SHOP_MAX_CONNECTION_AGE_GRACE_MS = "15000";
  t.like(serverConfig("user", 50051), {
    maxConnectionAgeMs: 60_000,
    maxConnectionAgeGraceMs: 15_000,
  });
});

test("a WatchOrder whose request arrives after the server's GOAWAY ends UNAVAILABLE at once", async (t) => {
  const fleet = await startFleet(t, {
    config: { order: { maxConnectionAgeMs: 500, maxConnectionAgeGraceMs: 60_000 } },
  });
  const mug = await addProduct(fleet.products, { stock: 2 });
  const user = await addUser(fleet.users);
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "watched-late",
  });
  const token = await tokenFor(user.userId);
  // The call's headers first, its request only once the GOAWAY came: HTTP/2 lets a stream
  // opened before it go on, and the server starts the call then.
  const lateWatch = async (goaway: (session: http2.ClientHttp2Session) => Promise<unknown>) => {
    const session = http2.connect(`http://${fleet.order.server.address}`);
    session.on("error", () => {});
    t.teardown(() => session.destroy());
    const { stream, status } = rawGrpcCall(session, "/shop.order.v1.OrderService/WatchOrder", {
      authorization: `Bearer ${token}`,
    });
    const outcome = new Promise<string>((resolve) => {
      status.then((code) => resolve(`status ${code}`));
      stream.on("data", () => resolve("a message"));
    });
    await goaway(session);
    stream.end(grpcFrame(WatchOrderRequest.encode({ orderId: order?.orderId ?? "" }).finish()));
    // Not left to run until the grace period (a minute) cuts it.
    return Promise.race([
      outcome,
      new Promise<string>((resolve) => setTimeout(resolve, 5_000, "nothing after 5 s")),
    ]);
  };
  // The server's GOAWAY, at the connection's maximum age: call again elsewhere. (Node's client
  // answers it with a GOAWAY of its own, and Node closes the server's session again then: the
  // first close says who closed it.)
  t.is(await lateWatch((session) => once(session, "goaway")), `status ${Code.UNAVAILABLE}`);
});
