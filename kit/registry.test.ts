// The registry a forker edits first (services/registry.ts): what it derives, and every mistake
// in it refused as the mesh loads, before any service starts.
import test from "ava";
import { OrderServiceService } from "../gen/ts/shop/order/v1/order.js";
import { orderService } from "../services/order/service.js";
import { productService } from "../services/product/service.js";
import { userService } from "../services/user/service.js";
import { metricsPortFor, ServiceRegistry } from "./registry.js";

const user = { module: userService, port: 50051 };
const product = {
  module: productService,
  port: 50052,
  exposure: { InventoryService: "internal" as const },
};
const order = { module: orderService, port: 50053 };

test("services start after the services they call, whatever order the entries are in", (t) => {
  const registry = new ServiceRegistry([order, product, user]);
  t.deepEqual(registry.names, ["user", "product", "order"]);
  t.deepEqual(registry.get("order").clients, { users: "user", inventory: "product" });
  t.deepEqual(registry.get("order").dependencies, ["user", "product"]);
  t.deepEqual(registry.internalServices, ["shop.product.v1.InventoryService"]);
  t.is(registry.owner("shop.product.v1.InventoryService")?.name, "product");
});

test("a service's metrics port is its port + 1000 unless its entry sets one, and replicas keep the distance", (t) => {
  const registry = new ServiceRegistry([user, product, { ...order, metricsPort: 9464 }]);
  t.is(registry.get("user").metricsPort, 51051);
  t.is(registry.get("order").metricsPort, 9464);
  t.is(metricsPortFor(registry.get("user"), 50061), 51061);
  t.is(metricsPortFor(registry.get("order"), 50063), 9474);
  t.is(metricsPortFor(registry.get("order"), 0), 0);
  t.throws(() => metricsPortFor(registry.get("user"), 65_000), { message: /SHOP_METRICS_PORT/ });
});

test("a registry with a mistake in it is refused, naming the service", (t) => {
  const refused: [string, ConstructorParameters<typeof ServiceRegistry>[0], RegExp][] = [
    ["a name not lower-case", [{ ...user, module: { ...userService, name: "User" } }], /"User"/],
    [
      "a dependency nothing serves",
      [order, user],
      /order calls shop\.product\.v1\.\w+Service, which nothing serves/,
    ],
    [
      "an exposure of a service it does not serve",
      [{ ...user, exposure: { InventoryService: "internal" } }],
      /user: exposure names "InventoryService"/,
    ],
    [
      "an rpc for mesh callers only in a service public at the edge",
      [user, { module: productService, port: 50052 }],
      /product: \/shop\.product\.v1\.InventoryService\/ReserveStock is for mesh callers only.*exposure: \{ InventoryService: "internal" \}/,
    ],
    ["a port taken twice", [user, { ...product, port: 50051 }], /registered twice/],
    [
      "a metrics port on another's port",
      [user, { ...product, metricsPort: 50051 }],
      /registered twice/,
    ],
    ["a name taken twice", [user, user], /user: its name or one of its ports is registered twice/],
    [
      "a cycle",
      [
        { ...user, module: { ...userService, dependencies: { orders: OrderServiceService } } },
        product,
        order,
      ],
      /depends on itself/,
    ],
  ];
  for (const [mistake, entries, message] of refused) {
    t.throws(() => new ServiceRegistry(entries), { message }, mistake);
  }
});
