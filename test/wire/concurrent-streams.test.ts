// A service bounds the calls one connection may hold open at once, as HTTP/2 lets a server say
// (SETTINGS_MAX_CONCURRENT_STREAMS): a connection cannot make it take on unbounded work. A
// client past the bound waits for a slot; none of its calls fails for it.
import http2 from "node:http2";
import test from "ava";
import { MAX_CONCURRENT_STREAMS } from "../../kit/transport/limits.js";
import { addProduct } from "../../scripts/lib/seed.js";
import { createProductService } from "../../services/product/service.js";
import { clientsFor, start } from "../helpers/fleet.js";

test("a service tells each connection how many calls it may have open at once", async (t) => {
  const service = await start(t, createProductService());
  const session = http2.connect(`http://${service.server.address}`);
  t.teardown(() => session.destroy());
  const settings = await new Promise<http2.Settings>((resolve, reject) => {
    session.once("remoteSettings", resolve);
    session.once("error", reject);
  });
  t.is(settings.maxConcurrentStreams, MAX_CONCURRENT_STREAMS);
});

test("a client with more calls than that on one connection gets every one answered", async (t) => {
  const service = await start(t, createProductService());
  const { products } = clientsFor(t, { product: service.server.address });
  const mug = await addProduct(products, { name: "mug" });
  const calls = Array.from({ length: MAX_CONCURRENT_STREAMS + 200 }, () =>
    products.getProduct({ productId: mug.productId }, { timeoutMs: 30_000 }),
  );
  const answers = await Promise.all(calls);
  t.true(answers.every((answer) => answer.product?.productId === mug.productId));
});
