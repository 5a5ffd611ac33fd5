// A signed-in caller holds at most SHOP_MAX_STREAMS_PER_CALLER server streams open at once in a
// process: a WatchOrder lasts until its order is final and is read at every poll meanwhile, so one
// caller could otherwise open any number.
import http2 from "node:http2";
import { Metadata } from "@grpc/grpc-js";
import test from "ava";
import { Code, ServiceError } from "../kit/errors.js";
import { addProduct, addUser } from "../scripts/lib/seed.js";
import { tokenFor } from "./helpers/credentials.js";
import { until } from "./helpers/eventually.js";
import { orderLine, startFleet } from "./helpers/fleet.js";
import { rawGrpcCall } from "./helpers/grpc-frame.js";

test("a caller's streams past SHOP_MAX_STREAMS_PER_CALLER are RESOURCE_EXHAUSTED; others' and its own open ones go on", async (t) => {
  const fleet = await startFleet(t, { config: { order: { maxStreamsPerCaller: 2 } } });
  const mug = await addProduct(fleet.products, { stock: 10 });
  let placed = 0;
  const place = async (userId: string) =>
    (
      await fleet.orders.createOrder({
        userId,
        lines: [orderLine(mug.productId, 1)],
        requestId: `watched-${++placed}`,
      })
    ).order?.orderId as string;
  const [ann, bob] = [await addUser(fleet.users), await addUser(fleet.users)];
  const [annOrder, bobOrder] = [await place(ann.userId), await place(bob.userId)];

  const signedIn = async (userId: string) => {
    const metadata = new Metadata();
    metadata.set("authorization", `Bearer ${await tokenFor(userId)}`);
    return metadata;
  };
  const stops: AbortController[] = [];
  t.teardown(() => {
    for (const stop of stops) stop.abort();
  });
  /** A watch of `orderId` as `userId` (the admin when unset), once it has its first message. */
  const watch = async (orderId: string, userId?: string) => {
    const stop = new AbortController();
    stops.push(stop);
    let updates = 0;
    const ended = (async () => {
      for await (const _ of fleet.orders.watchOrder(
        { orderId },
        {
          timeoutMs: 60_000,
          signal: stop.signal,
          ...(userId && { metadata: await signedIn(userId) }),
        },
      )) {
        updates++;
      }
    })();
    ended.catch(() => {});
    await Promise.race([until("the watch's first message", () => updates > 0), ended]);
    return { stop, ended, updates: () => updates };
  };

  const first = await watch(annOrder, ann.userId);
  const second = await watch(annOrder, ann.userId);
  const refused = await t.throwsAsync(watch(annOrder, ann.userId), { instanceOf: ServiceError });
  t.like(refused, { code: Code.RESOURCE_EXHAUSTED, details: { reason: "TOO_MANY_STREAMS" } });
  t.deepEqual(refused?.details.quotaViolations?.[0]?.subject, `user:${ann.userId}`);

  // Another caller, and the admin watching the same order, have streams of their own.
  t.is((await watch(bobOrder, bob.userId)).updates(), 1);
  t.is((await watch(annOrder)).updates(), 1);

  // Ann's open watches still stream: her cancel reaches both.
  await fleet.orders.cancelOrder({ orderId: annOrder });
  await until(
    "both watches to see the cancel",
    () => first.updates() >= 2 && second.updates() >= 2,
  );
  await Promise.all([first.ended, second.ended]);

  // Ended streams free their places, and so does one its caller leaves.
  const next = await place(ann.userId);
  const kept = await watch(next, ann.userId);
  const left = await watch(next, ann.userId);
  await t.throwsAsync(watch(next, ann.userId), { message: /streams open/ });
  left.stop.abort();
  await until("a left stream to free its place", async () => {
    const opened = await watch(next, ann.userId).catch((error: unknown) => error);
    return !(opened instanceof ServiceError && opened.code === Code.RESOURCE_EXHAUSTED);
  });
  t.is(kept.updates(), 1);
});

test("WatchOrders that grpc-js refuses for their framing give their places back", async (t) => {
  const fleet = await startFleet(t, { config: { order: { maxStreamsPerCaller: 2 } } });
  const mug = await addProduct(fleet.products, { stock: 10 });
  const ann = await addUser(fleet.users);
  const { order } = await fleet.orders.createOrder({
    userId: ann.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "watched-after-refusals",
  });
  const token = await tokenFor(ann.userId);

  // Three signed-in WatchOrders without a request message: grpc-js answers them itself, and the
  // kit's middleware still sees each (it is logged and counted).
  const session = http2.connect(`http://${fleet.order.server.address}`);
  t.teardown(() => session.close());
  for (let i = 0; i < 3; i++) {
    const { stream, status } = rawGrpcCall(session, "/shop.order.v1.OrderService/WatchOrder", {
      authorization: `Bearer ${token}`,
    });
    stream.on("data", () => {});
    stream.end();
    t.is(await status, String(Code.INVALID_ARGUMENT));
  }

  // Her places are all free: a real watch streams.
  const metadata = new Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  for await (const update of fleet.orders.watchOrder(
    { orderId: order?.orderId ?? "" },
    { metadata, timeoutMs: 10_000 },
  )) {
    t.is(update.order?.state, order?.state);
    break;
  }
});
