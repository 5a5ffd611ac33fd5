// HTTP/2 rapid reset (CVE-2023-44487): a caller that opens streams and cancels each at once makes
// the server start, and throw away, work it never has to answer for. Neither front needs a guard
// of ours: Node's HTTP/2 (nghttp2's limit on resets) and Envoy (its premature-reset check) each
// end such a connection, and the service goes on serving everyone else. These tests fail if an
// upgrade of either takes its guard away.
import http2 from "node:http2";
import test from "ava";
import { GetProductRequest, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { createClient } from "../../kit/client/index.js";
import { addProduct } from "../../scripts/lib/seed.js";
import { createProductService } from "../../services/product/service.js";
import { startEnvoy } from "../helpers/envoy.js";
import { clientsFor, start } from "../helpers/fleet.js";
import { grpcFrame } from "../helpers/grpc-frame.js";

/** Streams the abusive caller opens at most before the test gives up on being stopped. */
const MAX_STREAMS = 5_000;

/**
 * Opens GetProduct streams on one connection, 100 at a time, each cancelled as soon as its
 * request is sent, until the peer ends the connection or MAX_STREAMS have been opened.
 */
async function resetLoop(address: string, productId: string) {
  const session = http2.connect(`http://${address}`);
  session.on("error", () => {});
  let goaway: number | undefined;
  session.on("goaway", (code) => {
    goaway = code;
  });
  await new Promise((resolve, reject) => {
    session.once("connect", resolve);
    session.once("error", reject);
  });
  const body = grpcFrame(GetProductRequest.encode({ productId }).finish());
  let opened = 0;
  while (opened < MAX_STREAMS && goaway === undefined && !session.closed && !session.destroyed) {
    for (let i = 0; i < 100; i++) {
      const stream = session.request({
        ":method": "POST",
        ":path": "/shop.product.v1.ProductService/GetProduct",
        "content-type": "application/grpc",
        te: "trailers",
      });
      stream.on("error", () => {});
      stream.end(body);
      stream.close(http2.constants.NGHTTP2_CANCEL);
      opened++;
    }
    await new Promise((resolve) => setImmediate(resolve));
  }
  const ended = goaway !== undefined || session.destroyed;
  session.destroy();
  return { opened, ended };
}

async function catalog(t: Parameters<typeof start>[0]) {
  const service = await start(t, createProductService());
  const { products } = clientsFor(t, { product: service.server.address });
  const mug = await addProduct(products, { name: "mug" });
  return { service, products, mug };
}

test("a service ends a connection that cancels every stream it opens, and serves the next caller", async (t) => {
  const { service, products, mug } = await catalog(t);
  const abuse = await resetLoop(service.server.address, mug.productId);
  t.true(abuse.ended, `the connection survived ${abuse.opened} cancelled streams`);
  t.log(`ended after ${abuse.opened} streams`);
  const { product } = await products.getProduct({ productId: mug.productId });
  t.is(product?.name, "mug");
});

test("Envoy ends a connection that cancels every stream it opens, and serves the next caller", async (t) => {
  const { service, mug } = await catalog(t);
  const envoy = await startEnvoy({
    services: { product: [{ host: "127.0.0.1", port: service.server.port }] },
    waitHealthy: ["product"],
  });
  t.teardown(() => envoy.stop());
  const abuse = await resetLoop(envoy.address, mug.productId);
  t.true(abuse.ended, `the connection survived ${abuse.opened} cancelled streams`);
  t.log(`ended after ${abuse.opened} streams`);
  t.is(await envoy.counter("http.ingress.downstream_rq_too_many_premature_resets"), 1);
  const products = createClient(ProductServiceService, envoy.address);
  t.teardown(() => products.close());
  const { product } = await products.getProduct({ productId: mug.productId });
  t.is(product?.name, "mug");
});
