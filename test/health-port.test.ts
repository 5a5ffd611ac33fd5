// SHOP_HEALTH_PORT: the kubelet's `grpc:` probes cannot present a mesh certificate, so a service
// that serves mutual TLS answers them on a second, plaintext port that serves grpc.health.v1 and
// nothing else. The statuses are the main port's; no shop rpc and no reflection is reachable there.
import test from "ava";
import { HealthService } from "../gen/ts/health/v1/health.js";
import { ProductServiceService } from "../gen/ts/shop/product/v1/product.js";
import { createClient } from "../kit/client/index.js";
import { Code, ServiceError } from "../kit/errors.js";
import { startService } from "../kit/runtime/index.js";
import { createProductService } from "../services/product/service.js";
import { meshSecurity, meshTransport, testCallers } from "./helpers/credentials.js";
import { grpcurl } from "./helpers/grpcurl.js";

const SERVING = 1;
const NOT_SERVING = 2;

/** The product service serving mutual TLS, with its health-only port on `healthPort`. */
const startProduct = (healthPort: number) =>
  startService(createProductService(), {
    host: "127.0.0.1",
    port: 0,
    healthPort,
    database: ":memory:",
    logLevel: "silent",
    shutdownGraceMs: 2_000,
    security: meshSecurity("product"),
  });

test("the health port answers Check in plaintext and serves nothing else", async (t) => {
  const product = await startProduct(0);
  t.teardown(() => product.stop());
  const healthPort = product.server.healthPort as number;
  t.true(Number.isInteger(healthPort) && healthPort > 0);
  const probes = `127.0.0.1:${healthPort}`;

  const health = createClient(HealthService, probes);
  t.teardown(() => health.close());
  t.is((await health.check({ service: "" })).status, SERVING);
  t.is((await health.check({ service: "shop.product.v1.ProductService" })).status, SERVING);
  const unknown = await t.throwsAsync(health.check({ service: "shop.nope.v1.NopeService" }), {
    instanceOf: ServiceError,
  });
  t.is(unknown?.code, Code.NOT_FOUND);
  t.is(unknown?.details.reason, "NOT_FOUND");

  // A shop rpc on the health port: not served there, with or without a token.
  const products = createClient(ProductServiceService, probes, { middleware: testCallers() });
  t.teardown(() => products.close());
  const refused = await t.throwsAsync(products.listProducts({ pageSize: 1, pageToken: "" }), {
    instanceOf: ServiceError,
  });
  t.is(refused?.code, Code.UNIMPLEMENTED);
  // Nor reflection: grpcurl cannot list what the port serves.
  const listed = await grpcurl([probes, "list"]);
  t.not(listed.code, 0);
  t.regex(listed.stderr, /does not support the reflection API|Unimplemented/i);

  // The main port still needs a mesh certificate; with one, the same service answers.
  const plain = createClient(HealthService, product.server.address, { defaultTimeoutMs: 2_000 });
  t.teardown(() => plain.close());
  await t.throwsAsync(plain.check({ service: "" }), { instanceOf: ServiceError });
  const meshed = createClient(HealthService, product.server.address, {
    transport: meshTransport("cli", "product"),
  });
  t.teardown(() => meshed.close());
  t.is((await meshed.check({ service: "" })).status, SERVING);

  // The probes see the statuses as they change: a shutdown sets NOT_SERVING first.
  product.server.health.setStatus("shop.product.v1.ProductService", "NOT_SERVING");
  t.is((await health.check({ service: "shop.product.v1.ProductService" })).status, NOT_SERVING);
});

test("a health port that cannot be bound stops the start", async (t) => {
  const first = await startProduct(0);
  t.teardown(() => first.stop());
  await t.throwsAsync(startProduct(first.server.healthPort as number));
});
