// A caller that leaves its connection (a GOAWAY of its own, or a connection that drops) is not the
// server closing it: its WatchOrder is not ended UNAVAILABLE (CONNECTION_CLOSING), and the call is
// logged and counted with the code of a caller that went away, CANCELLED; or DEADLINE_EXCEEDED,
// when its reset is its deadline.
import { once } from "node:events";
import http2 from "node:http2";
import test, { type ExecutionContext } from "ava";
import { WatchOrderRequest } from "../../gen/ts/shop/order/v1/order.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { tokenFor } from "../helpers/credentials.js";
import { eventually } from "../helpers/eventually.js";
import { captureLogger, orderLine, startFleet } from "../helpers/fleet.js";
import { grpcFrame } from "../helpers/grpc-frame.js";

/**
 * A watched order, and a raw HTTP/2 connection to the order service that watches it, with a
 * `grpc-timeout` when given. `answered` is when its first message came: the server had the
 * request by then.
 */
async function watching(t: ExecutionContext, grpcTimeout?: string) {
  const log = captureLogger("order");
  const fleet = await startFleet(t, { loggers: { order: log.logger } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 1 });
  const { order } = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "watched-by-a-leaving-caller",
  });
  const session = http2.connect(`http://${fleet.order.server.address}`);
  t.teardown(() => session.destroy());
  const message = WatchOrderRequest.encode({ orderId: order?.orderId ?? "" }).finish();
  const frame = grpcFrame(message);
  const stream = session.request({
    ":method": "POST",
    ":path": "/shop.order.v1.OrderService/WatchOrder",
    "content-type": "application/grpc",
    te: "trailers",
    authorization: `Bearer ${await tokenFor(user.userId)}`,
    ...(grpcTimeout && { "grpc-timeout": grpcTimeout }),
  });
  stream.end(frame);
  let trailers: http2.IncomingHttpHeaders | undefined;
  stream.on("trailers", (headers) => {
    trailers = headers;
  });
  stream.on("error", () => {});
  await once(stream, "data");
  const answered = performance.now();
  const watchLine = () =>
    log.lines.find((line) => line.method === "/shop.order.v1.OrderService/WatchOrder");
  const handled = async (code: string) => {
    const text = await fleet.order.metrics.text();
    const series = `grpc_server_handled_total{grpc_type="server_stream",grpc_service="shop.order.v1.OrderService",grpc_method="WatchOrder",grpc_code="${code}"}`;
    return text
      .split("\n")
      .find((line) => line.startsWith(series))
      ?.split(" ")[1];
  };
  return { session, stream, answered, trailers: () => trailers, watchLine, handled };
}

test("a caller's GOAWAY leaves its WatchOrder open; its cancel is logged and counted CANCELLED", async (t) => {
  const { session, stream, trailers, watchLine, handled } = await watching(t);
  // A client closing its channel: no new streams, the open ones go on (RFC 9113, 6.8).
  session.close();
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.is(trailers(), undefined, "the server ended the stream of a caller that only said GOAWAY");
  t.false(stream.closed);

  stream.close(http2.constants.NGHTTP2_CANCEL);
  const line = await eventually("the WatchOrder's log line", watchLine);
  t.is(line.code, "CANCELLED");
  t.is(await handled("Canceled"), "1");
  t.is(await handled("Unavailable"), "0");
});

test("a caller whose connection drops is logged and counted CANCELLED, not UNAVAILABLE", async (t) => {
  const { session, watchLine, handled } = await watching(t);
  session.socket.destroy();
  const line = await eventually("the WatchOrder's log line", watchLine);
  t.is(line.code, "CANCELLED");
  t.is(await handled("Canceled"), "1");
  t.is(await handled("Unavailable"), "0");
});

// The caller's deadline starts before the server's, by the time the request took to arrive, and
// its reset takes as long to come back: it lands just before the server's own timer. With 80 ms,
// 18 ms (less the time the first message took) before it: more than a tenth of the call's time.
const resetsAtDeadline = [
  ["a caller's reset at its deadline", "400m", 390],
  ["a short deadline's reset, however early its share of the time,", "80m", 62],
] as const;

for (const [what, grpcTimeout, resetAfterMs] of resetsAtDeadline) {
  test(`${what} is logged and counted DEADLINE_EXCEEDED`, async (t) => {
    const atDeadline = await watching(t, grpcTimeout);
    const wait = atDeadline.answered + resetAfterMs - performance.now();
    await new Promise((resolve) => setTimeout(resolve, wait));
    atDeadline.stream.close(http2.constants.NGHTTP2_CANCEL);
    const line = await eventually("the WatchOrder's log line", atDeadline.watchLine);
    t.is(line.code, "DEADLINE_EXCEEDED");
    t.is(await atDeadline.handled("DeadlineExceeded"), "1");
    t.is(await atDeadline.handled("Canceled"), "0");
  });
}

test("a caller's reset well before its deadline is logged and counted CANCELLED", async (t) => {
  const early = await watching(t, "30S");
  early.stream.close(http2.constants.NGHTTP2_CANCEL);
  const line = await eventually("the WatchOrder's log line", early.watchLine);
  t.is(line.code, "CANCELLED");
  t.is(await early.handled("Canceled"), "1");
});
