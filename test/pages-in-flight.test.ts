// The bound on list calls served at once (SHOP_MAX_PAGES_IN_FLIGHT). A list call holds its place
// until its page has been written out: a page its caller does not read keeps it, the next list
// call waits its turn (and leaves the queue at its deadline), other rpcs are not held up, and
// the place comes back when the caller goes, its connection ages out, or the page has waited
// SHOP_PAGE_WRITE_TIMEOUT_MS unread. Each list call is logged and counted once, with the status
// its caller got: a page reset before it was written out is not the OK it was sent with.
import http2 from "node:http2";
import { setTimeout as sleep } from "node:timers/promises";
import { Client, credentials, Metadata, type ServiceError } from "@grpc/grpc-js";
import test from "ava";
import { ListProductsRequest } from "../gen/ts/shop/product/v1/product.js";
import type { ServerConfig } from "../kit/config.js";
import type { CallStatus } from "../kit/context.js";
import { Code, decodeStatus } from "../kit/errors.js";
import type { ServerMiddleware } from "../kit/middleware/index.js";
import { addProduct } from "../scripts/lib/seed.js";
import { createProductService } from "../services/product/service.js";
import { eventually } from "./helpers/eventually.js";
import { captureLogger, clientsFor, start, type TestService } from "./helpers/fleet.js";
import { grpcFrame } from "./helpers/grpc-frame.js";
import { sampleValue } from "./helpers/metrics.js";
import { stallingLister } from "./helpers/stalling-lister.js";
import { expectStatus } from "./helpers/status.js";

const LIST_PRODUCTS = "/shop.product.v1.ProductService/ListProducts";

/** `shop_pages_in_flight` as the service's metrics show it now. */
async function pagesGauge(service: TestService): Promise<{ serving: number; waiting: number }> {
  const text = await service.metrics.text();
  const value = (state: string) =>
    Number(new RegExp(`^shop_pages_in_flight\\{state="${state}"\\} (\\d+)$`, "m").exec(text)?.[1]);
  return { serving: value("serving"), waiting: value("waiting") };
}

/** A probe for eventually(): the gauge's values, once they are these. */
const gaugeAt = (service: TestService, serving: number, waiting: number) => async () => {
  const gauge = await pagesGauge(service);
  return gauge.serving === serving && gauge.waiting === waiting ? gauge : undefined;
};

/** How many ListProducts calls the service counted with `code` (its Go name: OK, Canceled, …). */
async function listsHandled(service: TestService, code: string): Promise<number> {
  return Number(
    sampleValue(await service.metrics.text(), "grpc_server_handled_total", {
      grpc_method: "ListProducts",
      grpc_code: code,
    }),
  );
}

/** Metadata that names a call by its x-request-id. */
function requestIdMetadata(requestId: string): Metadata {
  const metadata = new Metadata();
  metadata.set("x-request-id", requestId);
  return metadata;
}

/**
 * A caller that asks for a page over plain HTTP/2 and does not read it: flow control keeps all
 * but its first 64 KB at the server. `requestId` is its x-request-id.
 */
function unreadPage(address: string, requestId = "unread-page", grpcTimeout?: string) {
  const session = http2.connect(`http://${address}`);
  const stream = session.request({
    ":method": "POST",
    ":path": LIST_PRODUCTS,
    "content-type": "application/grpc",
    te: "trailers",
    "x-request-id": requestId,
    ...(grpcTimeout && { "grpc-timeout": grpcTimeout }),
  });
  const body = ListProductsRequest.encode({
    pageSize: 1000,
    pageToken: "",
    inStockOnly: false,
  }).finish();
  stream.end(grpcFrame(body));
  stream.pause();
  // The server may end the connection under it; that is what one test waits for.
  session.on("error", () => {});
  stream.on("error", () => {});
  return {
    closed: new Promise<true>((resolve) => session.once("close", () => resolve(true))),
    /** The code the stream was reset with, once it closes. */
    reset: new Promise<number>((resolve) => stream.once("close", () => resolve(stream.rstCode))),
    /** Reads the page at last; resolves with the grpc-status of its trailers. */
    read(): Promise<string> {
      const status = new Promise<string>((resolve) =>
        stream.once("trailers", (trailers) => resolve(String(trailers["grpc-status"]))),
      );
      stream.resume();
      return status;
    },
    leave() {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    },
  };
}

/**
 * A product service with 100 products of 2 KB (a page of them is 200 KB), with its log lines,
 * and the status each list call was recorded with (its onFinish), by x-request-id: recorded by a
 * middleware inside the pages one, where the logging is outside it.
 */
async function catalog(t: Parameters<typeof start>[0], config: Partial<ServerConfig>) {
  const log = captureLogger("product");
  const statuses: { requestId: unknown; status: CallStatus }[] = [];
  const recording: ServerMiddleware = {
    name: "recording",
    wrap: (method, next) =>
      method.paged
        ? (request, ctx) => {
            ctx.onFinish((status) =>
              statuses.push({ requestId: ctx.logFields.x_request_id, status }),
            );
            return next(request, ctx);
          }
        : next,
  };
  const service = await start(t, createProductService(), {
    config,
    logger: log.logger,
    middleware: [recording],
  });
  const { products } = clientsFor(t, { product: service.server.address });
  const description = "d".repeat(2000);
  const added = [];
  for (let i = 0; i < 100; i += 10) {
    added.push(
      ...(await Promise.all(
        Array.from({ length: 10 }, (_, j) =>
          addProduct(products, { name: `p${i + j}`, description }),
        ),
      )),
    );
  }
  /**
   * The log line and the recorded status of the list call made with x-request-id `requestId`,
   * once it has them, and how many of each it has a moment later: a second would come at once.
   */
  const recordOf = async (requestId: string) => {
    const linesOf = () =>
      log.lines.filter((line) => line.method === LIST_PRODUCTS && line.x_request_id === requestId);
    const line = await eventually(`${requestId}'s log line`, () => linesOf()[0]);
    await sleep(200);
    const recorded = statuses.filter((entry) => entry.requestId === requestId);
    return {
      line,
      lines: linesOf().length,
      status: recorded[0]?.status,
      statuses: recorded.length,
    };
  };
  return { service, products, added, recordOf };
}

test("a page nobody reads holds its place; the next list call waits its turn, GetProduct does not", async (t) => {
  const { service, products, added } = await catalog(t, {
    maxPagesInFlight: 1,
    pageWriteTimeoutMs: 0,
  });
  const stalled = unreadPage(service.server.address);
  t.teardown(() => stalled.leave());
  await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));

  // Its handler returned long ago; its page has not been written out, so the place is still held.
  const waiting = products.listProducts({ pageSize: 10 }, { timeoutMs: 10_000 });
  await eventually("the next list call waits", gaugeAt(service, 1, 1));

  const first = added[0]?.productId as string;
  const { product } = await products.getProduct({ productId: first }, { timeoutMs: 2_000 });
  t.is(product?.productId, first, "GetProduct is answered while the list call waits");

  const expiring = products.listProducts({ pageSize: 10 }, { timeoutMs: 1_000 });
  await eventually("a second one waits behind it", gaugeAt(service, 1, 2));
  await expectStatus(t, expiring, Code.DEADLINE_EXCEEDED);
  await eventually("the call past its deadline left the queue", gaugeAt(service, 1, 1));

  stalled.leave();
  const page = await waiting;
  t.is(page.products.length, 10, "the waiting call gets its page once the caller goes");
  await eventually("every place is given back", gaugeAt(service, 0, 0));
});

test("an unread page gives its place back when its connection ages out", async (t) => {
  const { service, recordOf } = await catalog(t, {
    maxPagesInFlight: 1,
    maxConnectionAgeMs: 1_000,
    maxConnectionAgeGraceMs: 500,
  });
  const stalled = unreadPage(service.server.address);
  t.teardown(() => stalled.leave());
  await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));
  t.true(await stalled.closed, "the server closed the aged connection, page unread");
  await eventually("the connection's end gives it back", gaugeAt(service, 0, 0));
  const { line } = await recordOf("unread-page");
  t.is(line.code, "UNAVAILABLE", "the server ended it, as a caller reports a connection lost");
});

test("a page left unread past SHOP_PAGE_WRITE_TIMEOUT_MS is dropped, and its place given to the next list call", async (t) => {
  const { service, products, recordOf } = await catalog(t, {
    maxPagesInFlight: 1,
    pageWriteTimeoutMs: 500,
  });
  const stalled = unreadPage(service.server.address);
  t.teardown(() => stalled.leave());
  await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));
  const waiting = products.listProducts({ pageSize: 10 }, { timeoutMs: 10_000 });
  t.is((await waiting).products.length, 10, "the waiting call gets its page");
  t.is(await stalled.reset, http2.constants.NGHTTP2_CANCEL, "the unread page's stream is reset");
  await eventually("every place is given back", gaugeAt(service, 0, 0));

  const dropped = await recordOf("unread-page");
  t.is(dropped.line.code, "CANCELLED", "logged with the code of its reset, not the OK it was sent");
  t.is(dropped.lines, 1);
  t.is(dropped.statuses, 1);
  t.regex(
    dropped.status?.details ?? "",
    /^Dropped by the server, unread \d+ ms after it was sent$/,
  );
  const ms = Number(dropped.line.duration_ms);
  t.true(ms >= 450 && ms < 5_000, `duration_ms ${ms}: to the reset`);
  t.is(await listsHandled(service, "Canceled"), 1);
  t.is(await listsHandled(service, "OK"), 1, "the waiting call's, read in full");
});

test("a page its caller resets unread is logged and counted CANCELLED, once", async (t) => {
  const { service, recordOf } = await catalog(t, { maxPagesInFlight: 1 });
  const stalled = unreadPage(service.server.address, "reset-unread");
  t.teardown(() => stalled.leave());
  await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));
  // Long after its status was handed over: it is recorded only once its stream is done.
  await sleep(300);
  t.is(await listsHandled(service, "OK"), 0, "not counted while its page waits unread");
  stalled.leave();
  await eventually("its place is given back", gaugeAt(service, 0, 0));

  const reset = await recordOf("reset-unread");
  t.is(reset.line.code, "CANCELLED");
  t.is(reset.lines, 1);
  t.is(reset.statuses, 1);
  t.is(reset.status?.details, "Cancelled by the caller before it read its reply");
  t.true(
    Number(reset.line.duration_ms) >= 250,
    `duration_ms ${reset.line.duration_ms}: to the reset`,
  );
  t.is(await listsHandled(service, "Canceled"), 1);
  t.is(await listsHandled(service, "OK"), 0);
});

test("a page read in full is logged and counted once, OK", async (t) => {
  const { service, products, recordOf } = await catalog(t, { maxPagesInFlight: 1 });
  const { products: page } = await products.listProducts(
    { pageSize: 100 },
    { timeoutMs: 10_000, metadata: requestIdMetadata("read-in-full") },
  );
  t.is(page.length, 100);
  const read = await recordOf("read-in-full");
  t.is(read.line.code, "OK");
  t.is(read.lines, 1);
  t.is(read.statuses, 1);
  t.is(read.status?.code, Code.OK);
  t.is(await listsHandled(service, "OK"), 1);
  t.is(await listsHandled(service, "Canceled"), 0);
});

test("a page read after its caller's deadline is logged with the status its trailers carried", async (t) => {
  const { service, recordOf } = await catalog(t, { maxPagesInFlight: 1 });
  const late = unreadPage(service.server.address, "read-late", "300m");
  t.teardown(() => late.leave());
  await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));
  await sleep(600);
  // grpc-js's deadline replaced the OK the page was handed over with.
  t.is(await late.read(), String(Code.DEADLINE_EXCEEDED));
  const record = await recordOf("read-late");
  t.is(record.line.code, "DEADLINE_EXCEEDED");
  t.is(record.lines, 1);
  t.is(await listsHandled(service, "DeadlineExceeded"), 1);
  t.is(await listsHandled(service, "OK"), 0);
});

// A grpc-js caller whose thread stalls as its page comes: what it gets is what is recorded.
const stalledCallers: {
  what: string;
  config: Partial<ServerConfig>;
  stallMs: number;
  end?: (service: TestService) => Promise<void>;
  code: Code;
  /** The code's Go name, in grpc_server_handled_total. */
  counted: string;
}[] = [
  {
    what: "a dropped page's grpc-js caller gets CANCELLED",
    config: { pageWriteTimeoutMs: 300 },
    stallMs: 1_500,
    code: Code.CANCELLED,
    counted: "Canceled",
  },
  {
    what: "a grpc-js caller whose connection ages out with its page unread gets UNAVAILABLE",
    config: { maxConnectionAgeMs: 1_000, maxConnectionAgeGraceMs: 500 },
    stallMs: 3_000,
    code: Code.UNAVAILABLE,
    counted: "Unavailable",
  },
  {
    what: "a grpc-js caller whose page a shutdown cuts off unread gets UNAVAILABLE",
    config: {},
    // Past the test server's 2 s grace period and the cut after it.
    stallMs: 4_000,
    end: (service) => service.stop(),
    code: Code.UNAVAILABLE,
    counted: "Unavailable",
  },
];

for (const { what, config, stallMs, end, code, counted } of stalledCallers) {
  test(`${what}, and the call is logged and counted so`, async (t) => {
    const { service, recordOf } = await catalog(t, {
      maxPagesInFlight: 1,
      pageWriteTimeoutMs: 0,
      ...config,
    });
    const got = stallingLister(service.server.address, "stalled-caller", stallMs);
    await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));
    await end?.(service);
    t.is((await got).code, code);
    const record = await recordOf("stalled-caller");
    t.is(record.line.code, Code[code]);
    t.is(record.lines, 1);
    t.is(record.statuses, 1);
    t.is(await listsHandled(service, counted), 1);
    t.is(await listsHandled(service, "OK"), 0);
  });
}

test("with no bound (SHOP_MAX_PAGES_IN_FLIGHT=0), a page left unread is still dropped and logged so", async (t) => {
  const { service, recordOf } = await catalog(t, { maxPagesInFlight: 0, pageWriteTimeoutMs: 500 });
  const stalled = unreadPage(service.server.address, "unbounded-unread");
  t.teardown(() => stalled.leave());
  t.is(await stalled.reset, http2.constants.NGHTTP2_CANCEL, "the unread page's stream is reset");
  const dropped = await recordOf("unbounded-unread");
  t.is(dropped.line.code, "CANCELLED");
  t.is(dropped.lines, 1);
  t.is(await listsHandled(service, "Canceled"), 1);
  t.is(await listsHandled(service, "OK"), 0);
  t.deepEqual(await pagesGauge(service), { serving: 0, waiting: 0 }, "nothing is counted");
});

test("list calls waiting their turn as a shutdown's grace ends answer UNAVAILABLE before the cut", async (t) => {
  const { service, recordOf } = await catalog(t, {
    maxPagesInFlight: 1,
    pageWriteTimeoutMs: 0,
  });
  const stalled = unreadPage(service.server.address);
  t.teardown(() => stalled.leave());
  await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));
  // One connection, and no retries: the first call cut with it was INTERNAL to grpc-js.
  const client = new Client(service.server.address, credentials.createInsecure(), {
    "grpc.enable_retries": 0,
  });
  t.teardown(() => client.close());
  const request = Buffer.from(
    ListProductsRequest.encode(ListProductsRequest.fromPartial({ pageSize: 10 })).finish(),
  );
  const same = (bytes: Buffer) => bytes;
  const waiting = ["waiting-0", "waiting-1", "waiting-2"].map(
    (requestId) =>
      new Promise<ServiceError | null>((resolve) =>
        client.makeUnaryRequest(
          LIST_PRODUCTS,
          same,
          same,
          request,
          requestIdMetadata(requestId),
          { deadline: Date.now() + 20_000 },
          (error) => resolve(error),
        ),
      ),
  );
  await eventually("they wait their turn", gaugeAt(service, 1, 3));
  await service.stop();
  for (const error of await Promise.all(waiting)) {
    t.is(error?.code, Code.UNAVAILABLE, error?.details);
    t.is(decodeStatus(error?.metadata ?? new Metadata()).reason, "SHUTTING_DOWN");
  }
  for (const requestId of ["waiting-0", "waiting-1", "waiting-2"]) {
    const record = await recordOf(requestId);
    t.is(record.line.code, "UNAVAILABLE", requestId);
    t.is(record.lines, 1);
  }
});

test("a burst of list calls past the bound gets every page", async (t) => {
  const { service, products, added } = await catalog(t, { maxPagesInFlight: 2 });
  const pages = await Promise.all(
    Array.from({ length: 12 }, () =>
      products.listProducts({ pageSize: 100 }, { timeoutMs: 20_000 }),
    ),
  );
  for (const page of pages) {
    t.deepEqual(
      page.products.map((product) => product.productId).sort(),
      added.map((product) => product.productId).sort(),
    );
  }
  await eventually("every place is given back", gaugeAt(service, 0, 0));
});
