// `npm run mesh` end to end, when replicas fail: calls between services balanced over replicas,
// a replica that reports NOT_SERVING, replies lost after the work was done, a replica killed under
// load (test/helpers/front-door.ts).
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import test, { type ExecutionContext } from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { Code, ServiceError } from "../../kit/errors.js";
import type { Definitions, Handlers, ServiceModule } from "../../kit/service.js";
import { createOrderService } from "../../services/order/service.js";
import { createProductService } from "../../services/product/service.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { eventually, until } from "../helpers/eventually.js";
import { orderLine } from "../helpers/fleet.js";
import {
  type AccessLogLine,
  newProduct,
  newUser,
  sum,
  tag,
  useMesh,
  withId,
} from "../helpers/front-door.js";

const mesh = useMesh();

/**
 * A replica to hang: freeze() stops its process (SIGSTOP) with its connections open, as a stalled
 * host leaves them; thaw() lets it go on, and so does the test's end if it did not.
 */
function freezable(t: ExecutionContext, name: string) {
  const pid = mesh.replicaPid(name);
  let frozen = false;
  const thaw = () => {
    if (frozen) process.kill(pid, "SIGCONT");
    frozen = false;
  };
  t.teardown(thaw);
  return {
    freeze: () => {
      process.kill(pid, "SIGSTOP");
      frozen = true;
    },
    thaw,
  };
}

/** `module` with one rpc's handler replaced by what `replace` makes of the original. */
function withHandler<
  N extends string,
  S extends Definitions,
  D extends Definitions,
  K extends keyof S & string,
  R extends keyof Handlers<S[K]>,
>(
  module: ServiceModule<N, S, D>,
  service: K,
  rpc: R,
  replace: (original: Handlers<S[K]>[R]) => Handlers<S[K]>[R],
): ServiceModule<N, S, D> {
  return {
    ...module,
    implement(env) {
      const implementation = module.implement(env);
      const handlers = implementation.handlers[service];
      return {
        ...implementation,
        handlers: {
          ...implementation.handlers,
          [service]: { ...handlers, [rpc]: replace(handlers[rpc]) },
        },
      };
    },
  };
}

test.serial(
  "the order replicas call user and product directly, round_robin over their replicas",
  async (t) => {
    await mesh.waitHealthy(registry.names);
    const c = mesh.clients();
    t.teardown(c.close);
    const user = await newUser(c);
    const product = await newProduct(c, 100);
    const prefix = tag("direct");
    const calls = 10;
    for (let i = 0; i < calls; i++) {
      await c.orders.createOrder(
        {
          userId: user.userId,
          lines: [orderLine(product.productId, 1)],
          requestId: `${prefix}-${i}`,
        },
        withId(`${prefix}-${i}`),
      );
    }

    // Envoy carried the CreateOrder calls only: the calls they made did not pass it.
    const logged = await mesh.loggedRequests(prefix, calls);
    t.deepEqual(
      [...new Set(logged.map((entry) => entry.path))],
      ["/shop.order.v1.OrderService/CreateOrder"],
    );

    // The order service passes the caller's x-request-id on, so each replica's own log shows which
    // of these calls it served.
    const served = (service: ServiceName, method: string, expected: number) =>
      eventually(`${expected} ${method} calls in the ${service} replicas' logs`, async () => {
        const counts: Record<string, number> = {};
        for (const replica of mesh.plan.replicas.filter((r) => r.service === service)) {
          const log = await readFile(path.join(mesh.plan.logDir, `${replica.name}.log`), "utf8");
          counts[replica.name] = log
            .split("\n")
            .filter((entry) => entry.includes(prefix) && entry.includes(method)).length;
        }
        return sum(counts) >= expected ? counts : undefined;
      });
    // Each order makes one user call (GetUser) and one product call (ReserveStock): one order
    // replica alone alternates the replicas of each per call.
    const users = await served("user", "/shop.user.v1.UserService/GetUser", calls);
    const products = await served("product", "/shop.product.v1.InventoryService/", calls);
    t.log({ "user calls": users, "product calls": products });
    for (const [name, count] of Object.entries({ ...users, ...products })) {
      t.true(count > 0, `${name} served none of the direct calls`);
    }
    t.is(sum(users), calls);
    t.is(sum(products), calls);
  },
);

test.serial(
  "a replica that reports NOT_SERVING gets no new traffic within the health interval",
  async (t) => {
    // Honest flip: only the health status changes. The replica runs in this process so the test can
    // call health.setStatus; it keeps serving every RPC, so only Envoy's health check can divert
    // traffic from it. (SIGTERM would not do: grpc-js refuses new streams on shutdown, which diverts
    // traffic whatever the health check says.)
    await mesh.waitHealthy(["product"]);
    const name = "product-2";
    const address = mesh.plan.addresses.product[1] as string;
    const replica = await mesh.replaceReplica(t, name, createProductService());
    const c = mesh.clients();
    t.teardown(c.close);
    const product = await newProduct(c, 5);
    const interval = mesh.envoy.healthCheckIntervalMs;
    const prefix = tag("not-serving");

    // Envoy's view of the other replicas while the stream runs. If one fails its checks too (this
    // machine stalled it), no healthy host is left, and Envoy sends calls to the flipped one too:
    // stopping the other replica with SIGSTOP does that.
    let streaming = true;
    const othersFlagged = new Set<string>();
    const watching = (async () => {
      while (streaming) {
        for (const host of await mesh.hostsOf("product").catch(() => [])) {
          if (host.address === address || host.flags.length === 0) continue;
          othersFlagged.add(`${host.address} ${host.flags.join(", ")}`);
        }
        await sleep(50);
      }
    })();

    let flippedAt = 0;
    let flagged: Promise<number> | undefined;
    const failures: unknown[] = [];
    const pending: Promise<unknown>[] = [];
    const stream = 250;
    for (let i = 0; i < stream; i++) {
      if (i === 80) {
        flippedAt = Date.now();
        replica.server.health.setStatus("shop.product.v1.ProductService", "NOT_SERVING");
        // When Envoy marks the replica unhealthy, as seen through its admin interface.
        flagged = eventually(
          "Envoy to flag the NOT_SERVING replica",
          async () => {
            const host = await mesh.hostAt("product", address);
            return host?.flags.includes("failed_active_health_check") ? Date.now() : undefined;
          },
          { timeoutMs: 3_000, intervalMs: 25 },
        ).catch(() => 0);
      }
      pending.push(
        c.products
          .getProduct({ productId: product.productId }, withId(`${prefix}-${i}`))
          .catch((error: unknown) => failures.push(error)),
      );
      // Pacing, not synchronization: a steady stream, one call every 10 ms.
      await sleep(10);
    }
    await Promise.all(pending);
    streaming = false;
    await watching;
    const flaggedAt = (await flagged) ?? 0;
    t.deepEqual(failures, [], "a NOT_SERVING replica still answers; no call may fail");

    const lines = await mesh.loggedRequests(prefix, stream);
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
    if (last - flippedAt > interval + 500 && othersFlagged.size > 0) {
      t.log(`late traffic excused: Envoy flagged the other replica too (${[...othersFlagged]})`);
    } else {
      t.true(last - flippedAt <= interval + 500, `traffic ${last - flippedAt} ms after the flip`);
    }

    // SERVING again: back in within an interval, and it gets traffic again.
    replica.server.health.setStatus("shop.product.v1.ProductService", "SERVING");
    await mesh.waitHealthy(["product"], interval * 3);
    // Least-request balancing picks by load, so a fixed number of calls may all land elsewhere:
    // rounds until every replica served one, as the other balancing tests do.
    const back = await mesh.untilEveryReplica("product", tag("serving-again"), (requestId) =>
      c.products.getProduct({ productId: product.productId }, withId(requestId)),
    );
    t.true(back.has(address), `no traffic after SERVING: only ${[...back].join(", ")}`);
  },
);

test.serial(
  "concurrent CreateOrder retries through Envoy with one request_id create one order",
  async (t) => {
    await mesh.waitHealthy(registry.names);
    const c = mesh.clients({ retryCreateOrder: true });
    t.teardown(c.close);
    const user = await newUser(c);
    const product = await newProduct(c, 50);

    // order-2 does the work, then loses the reply: it answers UNAVAILABLE after CreateOrder has
    // written the order. Envoy retries UNAVAILABLE on another replica, and the client retries what
    // Envoy gives up on; request_id must turn every repeat into the same order.
    const name = "order-2";
    let lost = 0;
    const lossy = withHandler(
      createOrderService(),
      "OrderService",
      "createOrder",
      (createOrder) => async (request, ctx) => {
        await createOrder(request, ctx);
        lost++;
        throw new ServiceError(Code.UNAVAILABLE, "the reply was lost after the order was written");
      },
    );
    await mesh.replaceReplica(t, name, lossy);

    const retriesBefore = await mesh.counter("cluster.order.upstream_rq_retry");
    const requestId = tag("dup");
    const attempts = 12;
    const results = await Promise.allSettled(
      Array.from({ length: attempts }, (_, i) =>
        c.orders.createOrder(
          { userId: user.userId, lines: [orderLine(product.productId, 2)], requestId },
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

    const retries = (await mesh.counter("cluster.order.upstream_rq_retry")) - retriesBefore;
    const lines = await mesh.loggedRequests(requestId, attempts);
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
    await mesh.waitHealthy(["product"]);
    const name = "product-2";
    const address = mesh.plan.addresses.product[1] as string;
    let killedAt = 0;
    t.teardown(async () => {
      if (killedAt) await mesh.restartReplica(name);
    });
    const c = mesh.clients();
    t.teardown(c.close);
    const product = await newProduct(c, 5);
    const retriesBefore = await mesh.counter("cluster.product.upstream_rq_retry");
    const prefix = tag("kill");

    // 300 calls, one every 10 ms. Envoy has to cover the kill by itself: the client's own retries
    // would hide a failure from `failures`, so its access log is checked too. The one thing Envoy
    // cannot cover is a reply the replica had begun when it died: Envoy resets the stream, and
    // the client sends the call again (kit/client/failures.ts, cutShort).
    const calls = 300;
    const failures: string[] = [];
    const pending: Promise<unknown>[] = [];
    for (let i = 0; i < calls; i++) {
      if (i === 100) {
        process.kill(mesh.replicaPid(name), "SIGKILL");
        killedAt = Date.now();
      }
      pending.push(
        c.products
          .getProduct({ productId: product.productId }, withId(`${prefix}-${i}`))
          .catch((error: unknown) => failures.push(`#${i}: ${(error as Error).message}`)),
      );
      // Pacing, not synchronization: a steady stream, one call every 10 ms.
      await sleep(10);
    }
    await Promise.all(pending);
    t.deepEqual(failures, [], "every call succeeded");

    const cutShort = (entry: AccessLogLine) =>
      entry.grpc_status !== 0 &&
      entry.response_code_details.startsWith("upstream_reset_after_response_started");
    const cut = (await mesh.loggedRequests(prefix, calls)).filter(cutShort);
    // Each reply cut short, and the same call again, answered.
    const lines = await mesh.loggedRequests(prefix, calls + cut.length);
    const failed = lines.filter((entry) => entry.grpc_status !== 0 && !cutShort(entry));
    t.deepEqual(failed, [], "Envoy logged a failure it could have retried");
    for (const entry of cut) {
      t.true(
        lines.some((line) => line.x_request_id === entry.x_request_id && line.grpc_status === 0),
        `the call whose reply was cut short was not answered: ${JSON.stringify(entry)}`,
      );
    }
    const retries = (await mesh.counter("cluster.product.upstream_rq_retry")) - retriesBefore;
    const onKilled = lines.filter(
      (entry) => entry.upstream_host === address && Date.parse(entry.start_time) > killedAt + 50,
    );
    const host = await mesh.hostAt("product", address);
    t.log(
      `Envoy retried ${retries} calls; ${lines.filter((e) => e.attempts > 1).length} took more ` +
        `than one attempt; the killed replica is flagged ${host?.flags.join(", ") || "(none yet)"}`,
    );
    t.deepEqual(onKilled, [], "no call was answered by the killed replica after the kill");
    t.true(retries > 0, "Envoy retried nothing: did the kill land mid-stream?");
    t.true((host?.flags.length ?? 0) > 0, "Envoy still counts the killed replica as healthy");
  },
);

const countBy = (values: readonly unknown[]) => {
  const counts: Record<string, number> = {};
  for (const value of values) counts[String(value)] = (counts[String(value)] ?? 0) + 1;
  return counts;
};

/** Envoy's access-log lines of `count` calls tagged `prefix` that did not answer OK. */
const failedAtEnvoy = async (prefix: string, count: number) =>
  (await mesh.loggedRequests(prefix, count))
    .filter((entry) => entry.grpc_status !== 0)
    .map(
      (entry) =>
        `${entry.response_flags} ${entry.response_code_details} after ${entry.attempts} ` +
        `attempt(s), the last to ${entry.upstream_host}, ${entry.duration_ms} ms`,
    );

/** What a test's hook may do with the steady reads: send one more, or wait for all sent. */
interface SteadyReads {
  send(): void;
  settled(): Promise<unknown>;
}

/**
 * 250 GetProducts tagged `prefix`, one every 10 ms, `at(i, reads)` running before the i-th; then
 * fails the test if a caller saw a read fail, or Envoy answered one with a failure (the client's
 * own retries would hide it, so Envoy's access log is checked).
 */
async function readSteadily(
  t: ExecutionContext,
  c: ReturnType<typeof mesh.clients>,
  productId: string,
  prefix: string,
  at: (i: number, reads: SteadyReads) => unknown,
  options: { timeoutMs?: number } = {},
): Promise<void> {
  const failures: string[] = [];
  const pending: Promise<unknown>[] = [];
  const reads: SteadyReads = {
    send: () => {
      const i = pending.length;
      pending.push(
        c.products
          .getProduct({ productId }, { ...withId(`${prefix}-${i}`), ...options })
          .catch((error: unknown) => failures.push(`#${i}: ${(error as Error).message}`)),
      );
    },
    settled: () => Promise.all(pending),
  };
  for (let i = 0; i < 250; i++) {
    await at(i, reads);
    reads.send();
    // Pacing, not synchronization.
    await sleep(10);
  }
  await reads.settled();
  t.deepEqual(failures, [], "every read succeeded");
  t.deepEqual(
    await failedAtEnvoy(prefix, pending.length),
    [],
    "Envoy answered a read with a failure",
  );
}

test.serial(
  "a hung product replica (SIGSTOP) fails no read, though a burst waits on its connection",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const hung = freezable(t, "product-2");
    const c = mesh.clients();
    t.teardown(c.close);
    const product = await newProduct(c, 5);
    const prefix = tag("hung");

    // A steady stream, and a burst of 60 at once as the replica stops: calls Envoy sends it wait
    // for an answer, or for a connection, that never comes. Envoy alone must cover them.
    await readSteadily(t, c, product.productId, prefix, async (i, reads) => {
      if (i !== 50) return;
      // Every read sent so far has its answer first: a replica stopped while its answer is half
      // written (headers and message out, status not) leaves that call waiting out its
      // deadline, as nothing can retry a reply that has begun.
      await reads.settled();
      hung.freeze();
      for (let k = 0; k < 60; k++) reads.send();
    });

    hung.thaw();
    await mesh.waitHealthy(["product"]);
  },
);

test.serial(
  "a replica whose reads never answer, though it reports SERVING, fails no read: Envoy hedges",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const name = "product-2";
    const address = mesh.plan.addresses.product[1] as string;
    // Its GetProduct waits until the test ends; everything else, health included, answers.
    const released = new AbortController();
    const stuck = withHandler(
      createProductService(),
      "ProductService",
      "getProduct",
      (getProduct) => async (request, ctx) => {
        await once(released.signal, "abort");
        return getProduct(request, ctx);
      },
    );
    await mesh.replaceReplica(t, name, stuck);
    // Teardowns run last first: the stuck reads end before the replica stops.
    t.teardown(() => released.abort());
    const c = mesh.clients();
    t.teardown(c.close);
    const product = await newProduct(c, 5);
    const prefix = tag("stuck");

    // A steady stream, as in the tests above: one read every 10 ms, each with 5 s.
    const calls = 100;
    const pending: Promise<number>[] = [];
    for (let i = 0; i < calls; i++) {
      const started = Date.now();
      pending.push(
        c.products
          .getProduct(
            { productId: product.productId },
            { ...withId(`${prefix}-${i}`), timeoutMs: 5_000 },
          )
          .then(() => Date.now() - started),
      );
      await sleep(10);
    }
    const took = await Promise.all(pending);
    const lines = await mesh.loggedRequests(prefix, calls);
    t.deepEqual(await failedAtEnvoy(prefix, calls), []);
    const hedged = lines.filter((entry) => entry.attempts > 1);
    const host = await mesh.hostAt("product", address);
    t.log(
      `${hedged.length} of ${calls} hedged; slowest read ${Math.max(...took)} ms; ` +
        `answered by ${JSON.stringify(countBy(lines.map((entry) => entry.upstream_host)))}; ` +
        `the stuck replica is flagged ${host?.flags.join(", ") || "(none)"}`,
    );
    t.true(hedged.length > 0, "no read went to the stuck replica: nothing was hedged");
    t.true(
      lines.every((entry) => entry.upstream_host !== address),
      "the stuck replica answered a read",
    );
    // The replica that answered a hedge logged it as the call's second attempt.
    const ids = new Set(hedged.map((entry) => entry.x_request_id));
    const answered = await eventually("product-1's log lines of the hedged reads", async () => {
      const found = (await readFile(path.join(mesh.plan.logDir, "product-1.log"), "utf8"))
        .split("\n")
        .filter((line) => line.startsWith("{"))
        .map((line) => JSON.parse(line) as { x_request_id?: string; attempt?: number })
        .filter((line) => ids.has(line.x_request_id ?? ""));
      return found.length === ids.size ? found : undefined;
    });
    t.true(
      answered.every((line) => line.attempt === 2),
      JSON.stringify(answered.map((line) => line.attempt)),
    );
  },
);

test.serial(
  "a replica that stalls for 0.7 s as the other hangs is never ejected, and no read fails",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const stalled = freezable(t, "product-1");
    const hung = freezable(t, "product-2");
    const [stalledAddress, hungAddress] = mesh.plan.addresses.product as [string, string];
    const c = mesh.clients();
    t.teardown(c.close);
    const product = await newProduct(c, 5);
    const prefix = tag("stall");

    // product-1 stops for 0.7 s (a long GC pause, a starved CPU), and 0.3 s into it product-2
    // hangs for good. product-1's reads time out per try just as a hung replica's do, and it
    // is the one that will answer: taking it out would leave only the hung one.
    const ejected = new Set<string>();
    let reading = true;
    t.teardown(() => {
      reading = false;
    });
    const watching = (async () => {
      while (reading) {
        for (const host of await mesh.hostsOf("product")) {
          if (host.address === stalledAddress) for (const flag of host.flags) ejected.add(flag);
        }
        await sleep(20);
      }
    })();
    await readSteadily(
      t,
      c,
      product.productId,
      prefix,
      async (i) => {
        if (i === 30) stalled.freeze();
        if (i === 60) {
          // product-2 stops with no read in flight: one stopped half-way through its answer
          // could only wait out its deadline (the hung replica's test above says why).
          await until(
            "no read in flight on product-2",
            async () => {
              const host = await mesh.hostAt("product", hungAddress);
              return host?.stats.rq_active === 0;
            },
            { intervalMs: 5, timeoutMs: 2_000 },
          );
          hung.freeze();
        }
        if (i === 100) stalled.thaw();
      },
      { timeoutMs: 5_000 },
    );
    reading = false;
    await watching;
    t.deepEqual([...ejected], [], "Envoy took the stalled replica out");

    hung.thaw();
    await mesh.waitHealthy(["product"]);
  },
);

/** The replicas of `service` whose log shows a call with this x-request-id, once one does. */
function servedBy(service: ServiceName, id: string): Promise<string[]> {
  return eventually(`a ${service} replica's log line for ${id}`, async () => {
    const names: string[] = [];
    for (const replica of mesh.plan.replicas.filter((r) => r.service === service)) {
      const log = await readFile(path.join(mesh.plan.logDir, `${replica.name}.log`), "utf8");
      if (log.includes(`"x_request_id":"${id}"`)) names.push(replica.name);
    }
    return names.length > 0 ? names : undefined;
  });
}

/**
 * A replica the order replicas call directly, ready to freeze, and orders placed through the mesh
 * one after another; place() answers what went wrong with each that did not end CONFIRMED, and
 * how long the slowest took.
 */
async function ordersBeside(t: ExecutionContext, replica: string) {
  await mesh.waitHealthy(registry.names);
  const hung = freezable(t, replica);
  const c = mesh.clients();
  t.teardown(c.close);
  const user = await newUser(c);
  const product = await newProduct(c, 100);
  const prefix = tag(`hung-${replica}`);
  let serial = 0;
  const place = async (count: number, timeoutMs?: number) => {
    const failures: string[] = [];
    let slowestMs = 0;
    for (let i = 0; i < count; i++) {
      const id = `${prefix}-${serial++}`;
      const started = Date.now();
      await c.orders
        .createOrder(
          { userId: user.userId, lines: [orderLine(product.productId, 1)], requestId: id },
          { ...withId(id), ...(timeoutMs && { timeoutMs }) },
        )
        .then(({ order }) => {
          if (order?.state !== OrderState.ORDER_STATE_CONFIRMED)
            failures.push(`${id}: ${order?.state}`);
        })
        .catch((error: unknown) => failures.push(`${id}: ${(error as Error).message}`));
      slowestMs = Math.max(slowestMs, Date.now() - started);
    }
    return { failures, slowestMs };
  };

  // The freeze must meet the order replicas' calls: a channel still reconnecting after an earlier
  // test would leave the replica out of its round robin, and the test would pass untested. So
  // warm-up orders go on until every order replica's log shares one with the replica's log.
  const orderReplicas = mesh.plan.replicas.filter((r) => r.service === "order").length;
  const reached = new Set<string>();
  for (let i = 0; i < 16 && reached.size < orderReplicas; i++) {
    const id = `${prefix}-${serial}`;
    t.deepEqual((await place(1)).failures, []);
    const senders = await servedBy("order", id);
    const served = await servedBy(mesh.spec(replica).service, id);
    if (served.includes(replica)) for (const sender of senders) reached.add(sender);
  }
  t.is(reached.size, orderReplicas, `not every order replica sent ${replica} a call`);
  return { hung, place };
}

test.serial(
  "a hung product replica fails no order: its reservations go to the other once a ping goes unanswered",
  async (t) => {
    const { hung, place } = await ordersBeside(t, "product-2");

    // At once: round robin sends product-2 a reservation from each order replica, which is not
    // hedged (a write). It waits until its channel's keepalive ping goes unanswered, within 4 s
    // (kit/client/); the dropped connection fails it as UNAVAILABLE, and the client sends it
    // again, to product-1, well within the order's 5 s for a dependency.
    hung.freeze();
    const { failures, slowestMs } = await place(12, 6_000);
    t.deepEqual(failures, [], "an order waited out its deadline");
    t.log(`slowest of 12 orders: ${slowestMs} ms`);
    t.true(slowestMs > 1_000, "no order waited for the hung replica's connection to drop");

    hung.thaw();
    await mesh.waitHealthy(["product"]);
  },
);

test.serial(
  "a hung user replica costs an order its read's hedge, not its deadline: order hedges GetUser",
  async (t) => {
    const { hung, place } = await ordersBeside(t, "user-2");

    // At once: until their keepalive drops it (2–4 s, the test above), the order replicas' round
    // robin sends user-2 its share of GetUser calls, and each must be hedged to user-1 after
    // 0.5 s, well within an order's 1.5 s.
    hung.freeze();
    const { failures, slowestMs } = await place(12, 1_500);
    t.deepEqual(failures, [], "an order waited on the hung user replica");
    t.log(`slowest of 12 orders: ${slowestMs} ms`);
    t.true(slowestMs >= 500, "no order's GetUser waited for its hedge");

    hung.thaw();
    await mesh.waitHealthy(["user"]);
  },
);
