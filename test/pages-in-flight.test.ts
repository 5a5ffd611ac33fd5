// The bound on list calls served at once (SHOP_MAX_PAGES_IN_FLIGHT). A list call holds its place
// until its page has been written out: a page its caller does not read keeps it, the next list
// call waits its turn (and leaves the queue at its deadline), other rpcs are not held up, and
// the place comes back when the caller goes, its connection ages out, or the page has waited
// SHOP_PAGE_WRITE_TIMEOUT_MS unread.
import http2 from "node:http2";
import test from "ava";
import { ListProductsRequest } from "../gen/ts/shop/product/v1/product.js";
import type { ServerConfig } from "../kit/config.js";
import { Code } from "../kit/errors.js";
import { addProduct } from "../scripts/lib/seed.js";
import { createProductService } from "../services/product/service.js";
import { eventually } from "./helpers/eventually.js";
import { clientsFor, start, type TestService } from "./helpers/fleet.js";
import { grpcFrame } from "./helpers/grpc-frame.js";
import { expectStatus } from "./helpers/status.js";

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

/**
 * A caller that asks for a page over plain HTTP/2 and does not read it: flow control keeps all
 * but its first 64 KB at the server.
 */
function unreadPage(address: string) {
  const session = http2.connect(`http://${address}`);
  const stream = session.request({
    ":method": "POST",
    ":path": "/shop.product.v1.ProductService/ListProducts",
    "content-type": "application/grpc",
    te: "trailers",
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
    leave() {
      stream.close(http2.constants.NGHTTP2_CANCEL);
      session.close();
    },
  };
}

async function catalog(t: Parameters<typeof start>[0], config: Partial<ServerConfig>) {
  const service = await start(t, createProductService(), { config });
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
  return { service, products, added };
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
  const { service } = await catalog(t, {
    maxPagesInFlight: 1,
    maxConnectionAgeMs: 1_000,
    maxConnectionAgeGraceMs: 500,
  });
  const stalled = unreadPage(service.server.address);
  t.teardown(() => stalled.leave());
  await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));
  t.true(await stalled.closed, "the server closed the aged connection, page unread");
  await eventually("the connection's end gives it back", gaugeAt(service, 0, 0));
});

test("a page left unread past SHOP_PAGE_WRITE_TIMEOUT_MS is dropped, and its place given to the next list call", async (t) => {
  const { service, products } = await catalog(t, { maxPagesInFlight: 1, pageWriteTimeoutMs: 500 });
  const stalled = unreadPage(service.server.address);
  t.teardown(() => stalled.leave());
  await eventually("the unread page holds the one place", gaugeAt(service, 1, 0));
  const waiting = products.listProducts({ pageSize: 10 }, { timeoutMs: 10_000 });
  t.is((await waiting).products.length, 10, "the waiting call gets its page");
  t.is(await stalled.reset, http2.constants.NGHTTP2_CANCEL, "the unread page's stream is reset");
  await eventually("every place is given back", gaugeAt(service, 0, 0));
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
