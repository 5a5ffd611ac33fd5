// The one list of shopmesh's services, one line each: the module a service folder exports and the
// port it listens on by default. The launchers (npm start, npm run mesh), Envoy's routes, the
// compose file, the benchmark and the test fleets all derive from it, so a new service is its
// proto, its folder and one line here; `npm run new-service -- <name>` writes all three.
import { defineRegistry } from "../kit/registry.js";

export const registry = defineRegistry([
  { module: (await import("./user/service.js")).userService, port: 50051 },
  {
    module: (await import("./product/service.js")).productService,
    port: 50052,
    // The order service's private API: never routed, listed or transcoded at the edge.
    exposure: { InventoryService: "internal" },
  },
  { module: (await import("./order/service.js")).orderService, port: 50053 },
]);

export type ServiceName = (typeof registry.names)[number];
