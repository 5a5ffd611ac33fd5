// npm start: every registered service as its own process on its registry port (SHOP_<NAME>_PORT
// to change one), embedded SQLite in SHOP_DATA_DIR (data/) unless SHOP_DATABASE_URL names a
// PostgreSQL database, demo data on the first run (--no-seed or SHOP_SEED=false to skip), and a
// ready banner. Ctrl-C stops every service.
import { env } from "../kit/config.js";
import { registry, type ServiceName } from "../services/registry.js";
import {
  authFlag,
  grpcurlCommand,
  launchAccess,
  READY,
  START_BANNER_END,
  shellJson,
  storageLine,
  tokenLines,
} from "./lib/banner.js";
import { LaunchError, launchFlags, refuseDeploymentSettings } from "./lib/launcher.js";
import { type FleetPlan, startPlan } from "./lib/plan.js";
import { type DemoData, seedDemo } from "./lib/seed.js";
import { Supervisor } from "./lib/supervisor.js";

const flags = launchFlags("npm start", {
  "--no-seed": "no demo data on the first run (or SHOP_SEED=false)",
});
const seed = !flags.has("--no-seed") && env.bool("SHOP_SEED", true);
const supervisor = new Supervisor();

function banner(plan: FleetPlan, demo: DemoData, tokens: string[]): string {
  const at = (name: ServiceName) => plan.addresses[name][0] as string;
  const call = (name: ServiceName, method: string, body?: object, as?: "TOKEN" | "ADMIN_TOKEN") =>
    `  ${grpcurlCommand()} -plaintext ${as ? `${authFlag(as)} ` : ""}${body ? `-d ${shellJson(body)} ` : ""}${at(name)} ${method}`;
  const width = Math.max(8, ...registry.names.map((name) => name.length + 1));
  const lines = [
    "",
    READY,
    // Every replica's address: SHOP_<NAME>_PORTS may start more than one.
    ...registry.services.map(
      (service) =>
        `  ${service.name.padEnd(width)} ${plan.addresses[service.name].join(", ")}   ${service.protoServices.join(" ")}`,
    ),
    storageLine(plan),
    "",
    "Development profile: plaintext on 127.0.0.1, bearer tokens checked.",
    ...tokens,
    "",
    "Try it (reflection is on, no proto files needed):",
    call("user", "list"),
    call("order", "describe shop.order.v1.OrderService"),
  ];
  if (demo.userId) {
    lines.push(call("user", "shop.user.v1.UserService/GetUser", { user_id: demo.userId }, "TOKEN"));
  } else {
    lines.push(
      call(
        "user",
        "shop.user.v1.UserService/CreateUser",
        { user: { email: "you@example.com", display_name: "You" } },
        "ADMIN_TOKEN",
      ),
    );
  }
  lines.push(call("product", "shop.product.v1.ProductService/ListProducts", { page_size: 10 }));
  const [productId] = demo.productIds;
  if (demo.userId && productId) {
    lines.push(
      call(
        "order",
        "shop.order.v1.OrderService/CreateOrder",
        {
          user_id: demo.userId,
          lines: [{ product_id: productId, quantity: 1 }],
          request_id: "demo-order-1",
        },
        "TOKEN",
      ),
      call("order", "shop.order.v1.OrderService/ListOrders", { user_id: demo.userId }, "TOKEN"),
    );
  }
  lines.push(
    call("order", "grpc.health.v1.Health/Check", { service: "shop.order.v1.OrderService" }),
    "",
    START_BANNER_END,
    "",
  );
  return lines.join("\n");
}

supervisor.handleSignals();

try {
  refuseDeploymentSettings(process.env);
  const started = Date.now();
  const plan = startPlan();
  console.log(`starting ${registry.names.join(", ")}; logs in ${plan.logDir}`);
  await supervisor.launch(plan, {
    started,
    portHint: "is another npm start or npm run mesh running? SHOP_<NAME>_PORT moves a service",
  });
  const access = await launchAccess(plan);
  const demo = await seedDemo(
    { user: plan.addresses.user.join(","), product: plan.addresses.product.join(",") },
    seed,
    access,
  );
  console.log(banner(plan, demo, await tokenLines(access.token, demo.userId)));
} catch (error) {
  console.error(error instanceof LaunchError ? error.message : error);
  await supervisor.stopAll(1);
}
