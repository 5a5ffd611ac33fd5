// `npm run mesh -- --postgres`: two replicas of every service on a PostgreSQL server the launch
// starts itself, said so in the banner; an order through Envoy lands in that server, and Ctrl-C
// stops the server with everything else.
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { OrderServiceService, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { createClient } from "../../kit/client/index.js";
import { connectDatabase } from "../../kit/db/index.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { edgeTransport, testCallers } from "../helpers/credentials.js";
import { orderLine } from "../helpers/fleet.js";
import { isListening, launch } from "../helpers/launch.js";

test("npm run mesh -- --postgres runs two replicas of each service on a local PostgreSQL", async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), "shopmesh-mesh-pg-"));
  // The server runs as the postgres user when the tests run as root: it must reach its folder.
  await chmod(dataDir, 0o711);
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));
  const mesh = await launch(t, "mesh", { args: ["--postgres", "--no-seed"], dataDir });

  t.regex(
    mesh.banner,
    /^shopmesh is ready: Envoy in front of 2 replicas of each service, on PostgreSQL$/m,
  );
  const line =
    /^ {2}data PostgreSQL [\d.]+ \(in (\S+)\) (postgres:\/\/\S+): a schema per service \(user, product, order\)$/m.exec(
      mesh.banner,
    );
  t.truthy(line, mesh.banner);
  const [, cluster = "", url = ""] = line ?? [];
  t.is(path.resolve(cluster), path.join(dataDir, "postgres"));

  const client = <S extends Parameters<typeof createClient>[0]>(definition: S) => {
    // Through the edge as any client: TLS with the development CA, signed in.
    const made = createClient(definition, mesh.envoy as string, {
      middleware: testCallers(10_000),
      transport: edgeTransport(),
    });
    t.teardown(() => made.close());
    return made;
  };
  const shopper = await addUser(client(UserServiceService));
  const mug = await addProduct(client(ProductServiceService), { stock: 3 });
  const { order } = await client(OrderServiceService).createOrder({
    userId: shopper.userId,
    lines: [orderLine(mug.productId, 2)],
    requestId: "mesh-on-postgres",
  });
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);

  // What the replicas wrote is in the server's database, each service's in its own schema.
  const look = connectDatabase(url, { schema: "order", applicationName: "shopmesh test" });
  const orders = await look("orders").select("order_id", "state");
  const stock = await look.withSchema("product").from("products").select("stock_quantity");
  await look.destroy();
  t.deepEqual(orders, [{ order_id: order?.orderId, state: OrderState.ORDER_STATE_CONFIRMED }]);
  t.deepEqual(stock, [{ stock_quantity: 1 }]);

  t.is(await mesh.stop(), 0);
  t.false(await isListening(Number(new URL(url).port)), "the server stopped with the mesh");
});
