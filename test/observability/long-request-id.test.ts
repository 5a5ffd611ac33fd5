// A caller's x-request-id is its own to choose, but not its size: a huge one is kept to its first
// 128 characters in every log line, Envoy's access log and the services' alike, and in the calls
// a service makes, so one request cannot write tens of kilobytes into each log it passes.
import test from "ava";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { createClient } from "../../kit/client/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { startEnvoy } from "../helpers/envoy.js";
import { eventually } from "../helpers/eventually.js";
import { captureLogger, orderLine, startFleet } from "../helpers/fleet.js";
import { withId } from "../helpers/front-door.js";

const huge = `id-${"x".repeat(6_000)}`;
const kept = huge.slice(0, 128);

test("a huge x-request-id is logged, and passed on, as its first 128 characters", async (t) => {
  const logs = { order: captureLogger("order"), user: captureLogger("user") };
  const fleet = await startFleet(t, {
    loggers: { order: logs.order.logger, user: logs.user.logger },
  });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 1 });
  await fleet.orders.createOrder(
    { userId: user.userId, lines: [orderLine(mug.productId, 1)], requestId: "long-id" },
    withId(huge),
  );
  const logged = (lines: Record<string, unknown>[], method: string) =>
    lines.find((line) => line.method === method)?.x_request_id;
  t.is(logged(logs.order.lines, "/shop.order.v1.OrderService/CreateOrder"), kept);
  t.is(logged(logs.user.lines, "/shop.user.v1.UserService/GetUser"), kept);
});

test("Envoy's access log keeps a huge x-request-id to its first 128 characters", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 1 });
  const upstream = (name: "user" | "product" | "order") => [
    { host: "127.0.0.1", port: fleet[name].server.port },
  ];
  const envoy = await startEnvoy({
    services: { user: upstream("user"), product: upstream("product"), order: upstream("order") },
  });
  t.teardown(() => envoy.stop());
  const products = createClient(ProductServiceService, envoy.address);
  t.teardown(() => products.close());
  await products.getProduct({ productId: mug.productId }, withId(huge));
  const line = await eventually("the access log line", () =>
    envoy.accessLog().find((logged) => String(logged.x_request_id).startsWith("id-")),
  );
  t.is(line.x_request_id, kept);
});
