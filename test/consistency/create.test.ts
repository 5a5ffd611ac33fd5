// OK from CreateOrder means CONFIRMED, always: with two order replicas racing one request_id on
// one file, and after the order process is killed mid-load and the client resends.
import test from "ava";
import { type Order, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { Code, type ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { clientsFor, orderLine, startProcessFleet } from "../helpers/fleet.js";

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const RETRYABLE = ["UNAVAILABLE", "DEADLINE_EXCEEDED", "ABORTED"];

test("two replicas on one file, one request_id sent 10x to each at once: every OK is CONFIRMED", async (t) => {
  const a = await startProcessFleet(t, { replicas: { order: 2 } });
  const b = clientsFor(t, { order: a.address("order", 1) });
  const shopper = await addUser(a.users);
  const initial = 10_000;
  const mug = await addProduct(a.products, { stock: initial });

  const answers: Order[] = [];
  const codes = new Map<string, number>();
  for (let round = 0; round < 15; round++) {
    const request = {
      userId: shopper.userId,
      lines: [orderLine(mug.productId, 1 + (round % 4))],
      requestId: `race-${round}`,
    };
    const calls = Array.from({ length: 20 }, (_, i) =>
      (i % 2 ? b : a).orders.createOrder(request).then(
        ({ order }) => {
          answers.push(order as Order);
          codes.set("OK", (codes.get("OK") ?? 0) + 1);
        },
        (error: ServiceError) => {
          codes.set(Code[error.code], (codes.get(Code[error.code]) ?? 0) + 1);
          t.true(RETRYABLE.includes(Code[error.code]), error.message);
        },
      ),
    );
    await Promise.all(calls);
  }
  t.log("CreateOrder outcomes:", Object.fromEntries(codes));
  t.true(answers.length > 0);
  const notConfirmed = answers.filter((order) => order.state !== OrderState.ORDER_STATE_CONFIRMED);
  t.is(notConfirmed.length, 0, `${notConfirmed.length} OK answers were not CONFIRMED`);

  // One order per request id, and the stock agrees with the confirmed ones.
  const byRequest = new Map<string, Set<string>>();
  for (const order of answers) {
    byRequest.set(
      order.requestId,
      (byRequest.get(order.requestId) ?? new Set()).add(order.orderId),
    );
  }
  for (const [requestId, ids] of byRequest) t.is(ids.size, 1, requestId);
  const { orders } = await a.orders.listOrders({
    userId: shopper.userId,
    pageSize: 100,
    pageToken: "",
  });
  const confirmed = orders.filter((o) => o.state === OrderState.ORDER_STATE_CONFIRMED);
  t.is(confirmed.length, byRequest.size);
  const units = confirmed.reduce((sum, o) => sum + (o.lines[0]?.quantity ?? 0), 0);
  const { product } = await a.products.getProduct({ productId: mug.productId });
  t.is(product?.stockQuantity, initial - units);
});

test("after kill -9 of the order process, resends with the same request_id never get OK for an unconfirmed order", async (t) => {
  const ttlMs = 1_500;
  const fleet = await startProcessFleet(t, {
    env: { SHOP_RESERVATION_TTL_MS: String(ttlMs), SHOP_RECONCILE_MS: "200" },
  });
  const shopper = await addUser(fleet.users);
  const initial = 10_000;
  const mug = await addProduct(fleet.products, { stock: initial });

  // Warm the order process up, so that the kill lands among calls in every stage of the saga.
  await Promise.all(
    Array.from({ length: 5 }, (_, i) =>
      fleet.orders.createOrder({
        userId: shopper.userId,
        lines: [orderLine(mug.productId, 1)],
        requestId: `warm-${i}`,
      }),
    ),
  );
  const requests = Array.from({ length: 80 }, (_, i) => ({
    userId: shopper.userId,
    lines: [orderLine(mug.productId, 1 + (i % 3))],
    requestId: `kill-resend-${i}`,
  }));
  const acknowledged = new Map<string, Order>();
  const pending: typeof requests = [];
  const send = async (request: (typeof requests)[number]) => {
    try {
      const { order } = await fleet.orders.createOrder(request, { timeoutMs: 3_000 });
      acknowledged.set(request.requestId, order as Order);
    } catch (error) {
      t.true(RETRYABLE.includes(Code[(error as ServiceError).code]), (error as Error).message);
      pending.push(request);
    }
  };
  const first: Promise<void>[] = [];
  for (const [i, request] of requests.entries()) {
    first.push(send(request));
    if (i === 50) await fleet.kill("order");
    await sleep(4);
  }
  await Promise.all(first);
  t.log(`${acknowledged.size} acknowledged before the kill, ${pending.length} to resend`);
  await fleet.restart("order");

  // The client resends what it did not get an answer for, same id and body, until it does.
  for (let attempt = 0; attempt < 20 && pending.length > 0; attempt++) {
    await Promise.all(pending.splice(0).map(send));
    if (pending.length > 0) await sleep(200);
  }
  t.is(pending.length, 0);
  const unconfirmed = [...acknowledged.values()].filter(
    (order) => order.state !== OrderState.ORDER_STATE_CONFIRMED,
  );
  t.deepEqual(
    unconfirmed.map((o) => OrderState[o.state]),
    [],
  );

  // And they stay confirmed after the reservations' TTL and a few reconcile passes.
  await sleep(ttlMs + 1_000);
  for (const order of acknowledged.values()) {
    const { order: now } = await fleet.orders.getOrder({ orderId: order.orderId });
    t.is(now?.state, OrderState.ORDER_STATE_CONFIRMED, order.requestId);
  }
  const units =
    5 + [...acknowledged.values()].reduce((sum, o) => sum + (o.lines[0]?.quantity ?? 0), 0);
  const { product } = await fleet.products.getProduct({ productId: mug.productId });
  t.is(product?.stockQuantity, initial - units);
});
