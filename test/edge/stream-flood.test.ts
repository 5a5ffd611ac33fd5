// Streams held open and idle at the edge: anonymous health watches, which need no token, each
// hold some 20–40 KB of Envoy's heap without buffering a byte. Enough of them filled the heap budget,
// and Envoy then refused every request of every caller. As the heap nears its budget, the
// overload manager now cuts streams idle for a second (overload-manager.ts), and the edge keeps
// serving. A real Envoy with a small heap budget, in front of real replicas.
import http2 from "node:http2";
import * as grpc from "@grpc/grpc-js";
import test from "ava";
import { HealthService } from "../../gen/ts/health/v1/health.js";
import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { createClient } from "../../kit/client/index.js";
import { decodeStatus } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import type { ServiceName } from "../../services/registry.js";
import { testCallers } from "../helpers/credentials.js";
import { type EnvoyHandle, startEnvoy } from "../helpers/envoy.js";
import { until } from "../helpers/eventually.js";
import { fleetEndpoints, type ProcessFleet, spawnProcessFleet } from "../helpers/fleet.js";
import { grpcFrame } from "../helpers/grpc-frame.js";

/** A budget an idle Envoy with this config is well inside (it holds about 10 MiB). */
const HEAP_MIB = 48;
/** Streams whose heap is well past the budget: 60 connections of 100. */
const CONNECTIONS = 60;
const STREAMS_EACH = 100;

let fleet: ProcessFleet;
let envoy: EnvoyHandle;

test.before(async () => {
  fleet = await spawnProcessFleet();
  envoy = await startEnvoy({
    services: fleetEndpoints(fleet),
    heapMiB: HEAP_MIB,
  });
});

test.after.always(async () => {
  await envoy?.stop();
  await fleet?.stop();
});

/** Health/Check of the whole server through the edge: its status, or the error's code. */
function check(): Promise<string> {
  const client = new grpc.Client(envoy.address, grpc.credentials.createInsecure());
  const method = HealthService.check;
  return new Promise<string>((resolve) => {
    client.makeUnaryRequest(
      method.path,
      method.requestSerialize,
      method.responseDeserialize,
      { service: "" },
      new grpc.Metadata(),
      { deadline: Date.now() + 2_000 },
      (error, reply) => resolve(error ? `code ${error.code}` : `status ${reply?.status}`),
    );
  }).finally(() => client.close());
}

/** What the edge answered a call without a reply message: its grpc-status and ErrorInfo reason. */
type Refusal = string;

function refusalOf(headers: http2.IncomingHttpHeaders): Refusal | undefined {
  const code = headers["grpc-status"];
  if (code === undefined) return undefined;
  const metadata = new grpc.Metadata();
  const details = String(headers["grpc-status-details-bin"] ?? "");
  metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
  return `${code} ${decodeStatus(metadata).reason}`;
}

/** A call on `session` that sends `body`, or only its headers: resolves with its refusal, if any. */
function call(session: http2.ClientHttp2Session, path: string, body?: Uint8Array) {
  const stream = session.request({
    ":method": "POST",
    ":path": path,
    "content-type": "application/grpc",
    te: "trailers",
  });
  stream.on("error", () => {});
  if (body) stream.end(grpcFrame(body));
  return stream;
}

interface Flood {
  watching: number;
  cut: number;
  refused: Refusal[];
}

/** A Health/Watch of the whole server on `session`: resolves once answered or closed. */
function watch(session: http2.ClientHttp2Session, flood: Flood) {
  const stream = call(session, HealthService.watch.path, new Uint8Array(0));
  let answered = false;
  stream.on("close", () => {
    if (answered) flood.cut++;
  });
  return new Promise<void>((resolve) => {
    stream.once("response", (headers) => {
      const refusal = refusalOf(headers);
      if (refusal) flood.refused.push(refusal);
    });
    stream.once("data", () => {
      answered = true;
      flood.watching++;
      resolve();
    });
    stream.once("close", () => resolve());
  });
}

/**
 * A WatchOrder through the edge of an order placed on the services' own ports: `first` resolves
 * with its first message, `ended()` says how it ended, if it has.
 */
function watchAnOrder(signal: AbortSignal) {
  const direct = <S extends Parameters<typeof createClient>[0]>(definition: S, name: ServiceName) =>
    createClient(definition, fleet.address(name), { middleware: testCallers() });
  let ending: string | undefined;
  const first = (async () => {
    const users = direct(UserServiceService, "user");
    const products = direct(ProductServiceService, "product");
    const orders = direct(OrderServiceService, "order");
    const user = await addUser(users, { displayName: "Watcher" });
    const product = await addProduct(products, { stock: 5 });
    const { order } = await orders.createOrder({
      userId: user.userId,
      lines: [{ productId: product.productId, quantity: 1 }],
      requestId: "watched",
    });
    for (const client of [users, products, orders]) client.close();
    const edge = createClient(OrderServiceService, envoy.address, {
      middleware: testCallers(600_000),
    });
    signal.addEventListener("abort", () => edge.close());
    const updates = edge
      .watchOrder({ orderId: order?.orderId ?? "" }, { signal })
      [Symbol.asyncIterator]();
    await updates.next();
    (async () => {
      for (;;) if ((await updates.next()).done) break;
      ending = "done";
    })().catch((error: unknown) => {
      ending = signal.aborted ? "aborted" : String(error);
    });
  })();
  return { first, ended: () => ending };
}

test("a flood of idle anonymous health watches is cut as the heap fills; other calls are served", async (t) => {
  t.is(await check(), "status 1", "SERVING before the flood");
  const sessions: http2.ClientHttp2Session[] = [];
  t.teardown(() => {
    for (const session of sessions) session.destroy();
  });
  const connect = () => {
    const session = http2.connect(`http://${envoy.address}`);
    session.on("error", () => {});
    sessions.push(session);
    return session;
  };
  // A signed-in watch of an order, which no overload cuts: Envoy could only reset it.
  const watcher = new AbortController();
  t.teardown(() => watcher.abort());
  const watched = watchAnOrder(watcher.signal);
  await watched.first;

  // A call whose request never ends, as a slow client's: held up to a minute otherwise.
  const held = call(connect(), "/shop.product.v1.ProductService/GetProduct");
  const heldAnswer = new Promise<Refusal | undefined>((resolve) => {
    held.once("response", (headers) => resolve(refusalOf(headers)));
    held.once("close", () => resolve(undefined));
  });

  const flood: Flood = { watching: 0, cut: 0, refused: [] };
  // As a flood comes: a connection of watches at a time, each answered before the next.
  for (let c = 0; c < CONNECTIONS; c++) {
    const session = connect();
    await Promise.all(Array.from({ length: STREAMS_EACH }, () => watch(session, flood)));
  }
  // The edge cuts the idle calls, and serves again while the flood's connections stay open.
  await until("the edge serves during the flood", async () => (await check()) === "status 1", {
    timeoutMs: 30_000,
  });
  t.true(flood.cut > 0, `${flood.cut} of ${flood.watching} watches cut`);
  t.true((await envoy.counter("http.ingress.downstream_rq_idle_timeout")) > 0);
  t.is(await heldAnswer, "14 EDGE_OVERLOADED", "the held call is cut, and told why");
  t.is(watched.ended(), undefined, "the order's watch is still open");
  // Whatever the edge refused meanwhile, it refused as a call to resend: for want of memory, or
  // of room in the cluster's bounds (no replica could take it).
  const codes = new Set(flood.refused.map((refusal) => refusal.split(" ")[0]));
  t.deepEqual([...codes], flood.refused.length ? ["14"] : [], String(new Set(flood.refused)));
  t.log(`${flood.cut} of ${flood.watching} watches cut, ${flood.refused.length} refused`);
});
