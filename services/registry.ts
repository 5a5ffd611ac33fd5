// The one list of shopmesh's services. The launchers (npm start, npm run mesh), Envoy's routes,
// the compose file, the benchmark and the test fleets all derive from it: a new service is its
// proto, its folder and one line here (npm run new-service -- <name> writes all three).
import { defineRegistry } from "../kit/registry.js";
import { orderService } from "./order/service.js";
import { productService } from "./product/service.js";
import { userService } from "./user/service.js";

export const registry = defineRegistry([
  { module: userService, port: 50051 },
  { module: productService, port: 50052 },
  { module: orderService, port: 50053 },
]);

export type ServiceName = (typeof registry.names)[number];
