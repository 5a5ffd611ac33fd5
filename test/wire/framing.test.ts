// Requests that break gRPC's framing, which grpc-js answers itself before any handler runs: no
// request message or two, a truncated frame, a body that does not decompress, an encoding or a
// grpc-timeout it cannot read, a message over the size limit. Each is the client's mistake with
// google.rpc details (never INTERNAL, never UNIMPLEMENTED for a method that exists), each served
// call among them is logged and counted like any other, and the server keeps serving. A path
// the server has no method for is UNIMPLEMENTED, with details.
import { once } from "node:events";
import http2 from "node:http2";
import { gzipSync } from "node:zlib";
import * as grpc from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { Status } from "../../gen/ts/google/rpc/status.js";
import { CreateProductRequest } from "../../gen/ts/shop/product/v1/product.js";
import { Code } from "../../kit/errors.js";
import { type Logger, logGrpcJsTo } from "../../kit/observability/logger.js";
import { registry } from "../../services/registry.js";
import { ADMIN_TOKEN } from "../helpers/credentials.js";
import { eventually } from "../helpers/eventually.js";
import { captureLogger, start } from "../helpers/fleet.js";
import { grpcFrame, rawGrpcCall } from "../helpers/grpc-frame.js";

const GET_PRODUCT = "/shop.product.v1.ProductService/GetProduct";
const WATCH = "/grpc.health.v1.Health/Watch";
const CHECK = "/grpc.health.v1.Health/Check";

// GetProductRequest { product_id: "prd_none" } and HealthCheckRequest { service: "" }.
const getProduct = grpcFrame(Buffer.from([0x0a, 0x08, ...Buffer.from("prd_none")]));
const emptyMessage = grpcFrame(Buffer.alloc(0));

type Answer = { code: number; message: string; reason?: string; domain?: string };

/** Sends a raw HTTP/2 gRPC request and reads the status it ends with. */
function call(
  session: http2.ClientHttp2Session,
  path: string,
  body: Buffer,
  headers: http2.OutgoingHttpHeaders = {},
): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const request = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    let answer: Answer | undefined;
    const read = (h: http2.IncomingHttpHeaders) => {
      if (h["grpc-status"] === undefined) return;
      const raw = h["grpc-status-details-bin"];
      const info = raw
        ? Status.decode(Buffer.from(String(raw), "base64")).details.find((d) =>
            d.typeUrl.endsWith("google.rpc.ErrorInfo"),
          )
        : undefined;
      const decoded = info && ErrorInfo.decode(info.value);
      answer = {
        code: Number(h["grpc-status"]),
        message: decodeURIComponent(String(h["grpc-message"] ?? "")),
        ...(decoded && { reason: decoded.reason, domain: decoded.domain }),
      };
    };
    request.on("response", read);
    request.on("trailers", read);
    request.on("data", () => {});
    request.on("end", () => (answer ? resolve(answer) : reject(new Error(`${path}: no status`))));
    request.on("error", reject);
    request.end(body);
  });
}

/** A product service on a free port, and a raw HTTP/2 session to it; both closed after `t`. */
async function productSession(t: ExecutionContext, logger?: Logger) {
  const product = registry.services.find((s) => s.name === "product");
  if (!product) throw new Error("no product service in the registry");
  const service = await start(t, product.module, logger ? { logger } : {});
  const session = http2.connect(`http://${service.server.address}`);
  // A connection the test's end cuts while it is still being made is no failure of the test's.
  session.on("error", () => {});
  t.teardown(() => session.close());
  return { service, session };
}

const cases: [string, Buffer, http2.OutgoingHttpHeaders, Code, string][] = [
  ["no message", Buffer.alloc(0), {}, Code.INVALID_ARGUMENT, "MALFORMED_REQUEST"],
  [
    "two messages",
    Buffer.concat([getProduct, getProduct]),
    {},
    Code.INVALID_ARGUMENT,
    "MALFORMED_REQUEST",
  ],
  [
    "a truncated frame",
    grpcFrame(Buffer.from([0x0a]), false, 100),
    {},
    Code.INVALID_ARGUMENT,
    "MALFORMED_REQUEST",
  ],
  [
    "a body that is not gzip",
    grpcFrame(Buffer.from("not gzip"), true),
    { "grpc-encoding": "gzip" },
    Code.INVALID_ARGUMENT,
    "MALFORMED_REQUEST",
  ],
  [
    "an unreadable grpc-timeout",
    getProduct,
    { "grpc-timeout": "soon" },
    Code.INVALID_ARGUMENT,
    "MALFORMED_REQUEST",
  ],
  [
    "an unknown grpc-encoding",
    grpcFrame(Buffer.from("x"), true),
    { "grpc-encoding": "br" },
    Code.UNIMPLEMENTED,
    "UNSUPPORTED_ENCODING",
  ],
  [
    "a message over the limit",
    grpcFrame(gzipSync(Buffer.alloc(5 * 1024 * 1024)), true),
    { "grpc-encoding": "gzip" },
    Code.RESOURCE_EXHAUSTED,
    "REQUEST_TOO_LARGE",
  ],
];

test("grpc-js's own refusals are the client's mistake, with details, logged and counted", async (t) => {
  const { logger, lines } = captureLogger("product");
  const { service, session } = await productSession(t, logger);

  for (const [name, body, headers, code, reason] of cases) {
    const answer = await call(session, GET_PRODUCT, body, headers);
    t.like(answer, { code, reason, domain: "shop.product.v1" }, name);
  }
  // The same on a server-streaming rpc and on health, which the kit serves through a library.
  t.like(await call(session, WATCH, Buffer.alloc(0)), {
    code: Code.INVALID_ARGUMENT,
    reason: "MALFORMED_REQUEST",
    domain: "grpc.health.v1",
  });
  t.like(await call(session, CHECK, Buffer.concat([emptyMessage, emptyMessage])), {
    code: Code.INVALID_ARGUMENT,
    reason: "MALFORMED_REQUEST",
  });
  // A well-formed call still works, and is logged too.
  t.like(await call(session, GET_PRODUCT, getProduct), { code: Code.NOT_FOUND });

  const logged = lines.filter((line) => line.method === GET_PRODUCT).map((line) => line.code);
  t.deepEqual(
    logged,
    [...cases.map(([, , , code]) => Code[code]), "NOT_FOUND"],
    "one line per GetProduct, with the code the client got",
  );
  const metrics = await service.metrics.text();
  /** The value of a GetProduct series of `metric` whose labels match `labels`, a pattern. */
  const counted = (metric: string, labels = "") =>
    Number(
      metrics.match(
        new RegExp(
          `^grpc_server_${metric}\\{[^}]*grpc_method="GetProduct"[^}]*${labels}[^}]*\\} (\\d+)`,
          "m",
        ),
      )?.[1] ?? 0,
    );
  const handled = (grpcCode: string) => counted("handled_total", `grpc_code="${grpcCode}"`);
  t.is(handled("InvalidArgument"), 5);
  t.is(handled("Unimplemented"), 1);
  t.is(handled("ResourceExhausted"), 1);
  t.is(handled("Internal"), 0);
  // The messages each call carried as far as grpc-js read: none, two, a truncated one, one that
  // is not gzip, none past an unreadable grpc-timeout, one of an unknown encoding, one too large,
  // and the well-formed call's.
  t.is(counted("msg_received_total"), 0 + 2 + 0 + 1 + 0 + 1 + 1 + 1);
});

test("a call whose deadline passes while it runs ends DEADLINE_EXCEEDED with details", async (t) => {
  const { session } = await productSession(t);
  // Health's Watch never ends by itself: grpc-js's own deadline timer ends it.
  t.like(await call(session, WATCH, emptyMessage, { "grpc-timeout": "200m" }), {
    code: Code.DEADLINE_EXCEEDED,
    reason: "DEADLINE_EXCEEDED",
    domain: "grpc.health.v1",
  });
});

test("a grpc-timeout that is not up to 8 digits and a unit is INVALID_ARGUMENT", async (t) => {
  const { session } = await productSession(t);
  for (const value of ["-1S", "5S junk", "100000000S", "1.5S", "5s"]) {
    t.like(
      await call(session, GET_PRODUCT, getProduct, { "grpc-timeout": value }),
      { code: Code.INVALID_ARGUMENT, reason: "MALFORMED_REQUEST" },
      value,
    );
  }
});

test("a grpc-timeout past what 32 bits of milliseconds hold is a deadline that far off", async (t) => {
  const { session } = await productSession(t);
  if (session.connecting) await once(session, "connect");
  // 720 hours: grpc-js alone wrapped it around and ended the watch at once.
  const watch = session.request({
    ":method": "POST",
    ":path": WATCH,
    "content-type": "application/grpc",
    te: "trailers",
    "grpc-timeout": "720H",
  });
  watch.on("data", () => {});
  watch.on("error", () => {});
  watch.end(emptyMessage);
  const outcome = await Promise.race([
    new Promise<string>((resolve) =>
      watch.on("trailers", (h) => resolve(`ended ${h["grpc-status"]}`)),
    ),
    new Promise<string>((resolve) => setTimeout(resolve, 500, "open")),
  ]);
  watch.close();
  t.is(outcome, "open");
});

test("a method the server lacks is UNIMPLEMENTED with details, and the server keeps serving", async (t) => {
  const { session } = await productSession(t);

  const unknown = (domain: string) => ({
    code: Code.UNIMPLEMENTED,
    reason: "UNKNOWN_METHOD",
    domain,
  });
  t.like(await call(session, "/shop.product.v1.ProductService/NoSuchRpc", getProduct), {
    ...unknown("shop.product.v1"),
    message: "shop.product.v1.ProductService has no method NoSuchRpc",
  });
  t.like(await call(session, "/shop.order.v1.OrderService/GetOrder", getProduct), {
    ...unknown("shop.product.v1"),
    message: "this server does not serve shop.order.v1.OrderService",
  });
  // Whatever the caller sends, or does not: no message, a stream left open, a path of one part.
  t.like(
    await call(session, "/grpc.health.v1.Health/NoSuchRpc", Buffer.alloc(0)),
    unknown("grpc.health.v1"),
  );
  t.like(await call(session, "/nothing", emptyMessage), unknown("shop.product.v1"));
  const queried = await call(session, `${GET_PRODUCT}?access_token=secret`, getProduct);
  t.like(queried, unknown("shop.product.v1"));
  t.false(queried.message.includes("secret"), "a query is not repeated");
  const open = session.request({
    ":method": "POST",
    ":path": "/no.such.v1.Service/Stream",
    "content-type": "application/grpc",
    te: "trailers",
  });
  open.on("error", () => {});
  const [trailers] = await Promise.race([
    new Promise<[http2.IncomingHttpHeaders]>((resolve) => {
      open.on("response", (h) => h["grpc-status"] !== undefined && resolve([h]));
      open.on("trailers", (h) => resolve([h]));
    }),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error("no status")), 5_000)),
  ]);
  open.close();
  t.is(Number(trailers["grpc-status"]), Code.UNIMPLEMENTED);

  t.like(await call(session, GET_PRODUCT, getProduct), { code: Code.NOT_FOUND });
});

test("a method the server lacks is logged and counted, by the served service it names", async (t) => {
  const { logger, lines } = captureLogger("product");
  const { service, session } = await productSession(t, logger);
  const traceId = "4bf92f3577b34da6a3ce929d0e0e4736";
  await call(session, "/shop.product.v1.ProductService/NoSuchRpc", getProduct, {
    "x-request-id": "unknown-1",
    traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
  });
  // A trace id OpenTelemetry refuses (all zeros) names no trace; the line still has a request id.
  await call(session, "/shop.product.v1.ProductService/Other", getProduct, {
    traceparent: `00-${"0".repeat(32)}-00f067aa0ba902b7-01`,
  });
  await call(session, `/made.up.v1.Service${"/x".repeat(200)}?access_token=secret`, getProduct);

  const counted = await service.metrics.registry
    .getSingleMetric("shop_grpc_server_unknown_method_total")
    ?.get();
  t.deepEqual(
    counted?.values.map(({ labels, value }) => [labels.grpc_service, value]),
    // Each served service and "other" from the start, at 0 until such a call.
    [
      ["shop.product.v1.ProductService", 2],
      ["shop.product.v1.InventoryService", 0],
      ["other", 1],
    ],
  );
  const logged = lines.filter((line) => line.code === "UNIMPLEMENTED");
  // With the reason the caller got, as every failed call's line has it.
  t.true(logged.every((line) => line.reason === "UNKNOWN_METHOD"));
  t.deepEqual(
    logged.map((line) => line.method),
    [
      "/shop.product.v1.ProductService/NoSuchRpc",
      "/shop.product.v1.ProductService/Other",
      `/made.up.v1.Service${"/x".repeat(200)}`.slice(0, 256),
    ],
  );
  // The process's service, as on every line: a second `service` key would have replaced it.
  t.is(logged[0]?.service, "product");
  // The ids that tie it to the caller's request, as a served call's line has them.
  t.like(logged[0], { x_request_id: "unknown-1", trace_id: traceId });
  t.regex(String(logged[1]?.x_request_id), /^[0-9a-f-]{36}$/);
  t.is(logged[1]?.trace_id, undefined);
  t.false(JSON.stringify(lines).includes("secret"), "a query is not logged");
});

test.serial(
  "a header that is not valid metadata is logged by its name alone: a token in it stays out of the log",
  async (t) => {
    const { logger, lines } = captureLogger("product");
    logGrpcJsTo(logger);
    t.teardown(() => grpc.setLogger(console));
    const { session } = await productSession(t, logger);
    // One byte outside ASCII makes grpc-js drop the header, and its message quotes the value.
    const token = "eyJhbGciOiJFUzI1NiJ9.the-secret-claims.the-signature";
    await call(session, GET_PRODUCT, getProduct, { authorization: `Bearer ${token}\u00ff` });

    const dropped = lines.filter((line) => line.library === "grpc-js");
    t.deepEqual(
      dropped.map((line) => [line.header, line.level]),
      [["authorization", 40]],
    );
    t.false(JSON.stringify(lines).includes("the-secret-claims"), "the token is not logged");
  },
);

test.serial(
  "a hundred headers that are not valid metadata make one log line, not a hundred",
  async (t) => {
    const { logger, lines } = captureLogger("product");
    logGrpcJsTo(logger);
    t.teardown(() => grpc.setLogger(console));
    const { session } = await productSession(t, logger);
    // "!" may be in an HTTP header's name, not in gRPC metadata's.
    const headers = Object.fromEntries(Array.from({ length: 100 }, (_, i) => [`x!${i}`, "v"]));
    await call(session, GET_PRODUCT, getProduct, headers);

    const dropped = lines.filter((line) => line.library === "grpc-js");
    t.is(dropped.length, 1, JSON.stringify(dropped.slice(0, 3)));
    t.like(dropped[0], { header: "x!0", dropped: 1 });
  },
);

// Node ends the server's stream before closing it when the client closes its connection, and
// only closes it when the connection is reset: grpc-js starts the handler in the first case only.
const drops = [
  ["closes", (session: http2.ClientHttp2Session) => session.destroy()],
  ["is reset", (session: http2.ClientHttp2Session) => session.socket.resetAndDestroy()],
] as const;
for (const [drop, how] of drops) {
  for (const sent of ["its message", "no message"]) {
    test(`a call whose connection ${drop} before its request ends (${sent} sent) runs no handler, and is logged CANCELLED`, async (t) => {
      const capture = captureLogger("product");
      const { service, session } = await productSession(t, capture.logger);
      const name = `connection-${drop.replace(" ", "-")}-before-its-end`;
      const createProduct = grpcFrame(
        CreateProductRequest.encode(
          CreateProductRequest.fromPartial({
            product: { name, price: { currencyCode: "EUR", amountMinor: "100" }, stockQuantity: 1 },
          }),
        ).finish(),
      );
      const path = "/shop.product.v1.ProductService/CreateProduct";
      if (session.connecting) await once(session, "connect");
      const { stream } = rawGrpcCall(session, path, { authorization: `Bearer ${ADMIN_TOKEN}` });
      // No END_STREAM: the request has not ended when the connection drops. (Node's
      // stream.close() would send END_STREAM before its reset.)
      if (sent === "its message") stream.write(createProduct);
      // The server has the call once it answers a ping sent after it (frames arrive in order),
      // however slow the machine: a call it never saw is no call of its own to log.
      await new Promise((resolve) => session.ping(() => resolve(undefined)));
      await new Promise((resolve) => setTimeout(resolve, 100));
      how(session);
      const line = await eventually("the call's log line", () =>
        capture.lines.find((entry) => entry.method === path),
      );
      t.is(line.code, "CANCELLED");
      // One line, also once the connection's end has surely reached the server.
      await new Promise((resolve) => setTimeout(resolve, 200));
      t.is(capture.lines.filter((entry) => entry.method === path).length, 1);
      const rows = await service.db("products").where({ name });
      t.deepEqual(rows, [], "nothing the caller never finished sending was written");
    });
  }
}

// grpc-js answers the deadline itself, before any handler begins: nothing logged or counted it,
// and the caller's reset that followed ran the handler on the request, logged CANCELLED.
test("a call whose deadline passes before its request ends is logged and counted DEADLINE_EXCEEDED, once, for its whole time", async (t) => {
  const capture = captureLogger("product");
  const { service, session } = await productSession(t, capture.logger);
  const { stream, status } = rawGrpcCall(session, GET_PRODUCT, { "grpc-timeout": "200m" });
  // The message, but no END_STREAM, as a caller still sending would.
  stream.write(getProduct);
  t.is(await status, String(Code.DEADLINE_EXCEEDED));
  const line = await eventually("the call's log line", () =>
    capture.lines.find((entry) => entry.method === GET_PRODUCT),
  );
  t.is(line.code, "DEADLINE_EXCEEDED");
  t.true(Number(line.duration_ms) >= 150, `logged after ${line.duration_ms} ms`);
  // The caller gives up on its side: no handler runs, and no second line is written.
  stream.close(http2.constants.NGHTTP2_CANCEL);
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.deepEqual(
    capture.lines.filter((entry) => entry.method === GET_PRODUCT).map((entry) => entry.code),
    ["DEADLINE_EXCEEDED"],
  );
  const metrics = await service.metrics.text();
  t.regex(
    metrics,
    /^grpc_server_handled_total\{[^}]*grpc_method="GetProduct"[^}]*grpc_code="DeadlineExceeded"[^}]*\} 1$/m,
  );
  t.regex(metrics, /^grpc_server_msg_received_total\{[^}]*grpc_method="GetProduct"[^}]*\} 1$/m);
});

// A message grpc-js is still inflating when the deadline passes: it then refuses the message too
// (too large, here), which grpc-js sends after the deadline's answer and nobody receives.
test("a call answered at its deadline while its message inflates is logged once, with the code its caller got", async (t) => {
  const capture = captureLogger("product");
  const { session } = await productSession(t, capture.logger);
  // 64 MiB of zeros: inflated chunk by chunk, and refused once past the 4 MiB limit.
  const bomb = grpcFrame(gzipSync(Buffer.alloc(64 * 1024 * 1024)), true);
  const { stream, status } = rawGrpcCall(session, GET_PRODUCT, {
    "grpc-timeout": "2m",
    "grpc-encoding": "gzip",
  });
  stream.end(bomb);
  const got = Number(await status);
  await new Promise((resolve) => setTimeout(resolve, 500));
  t.deepEqual(
    capture.lines.filter((entry) => entry.method === GET_PRODUCT).map((entry) => entry.code),
    [Code[got]],
  );
});
