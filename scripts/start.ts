// npm start: the three services as separate processes on 50051-50053 with embedded SQLite,
// a demo catalogue on the first run (--no-seed or SHOP_SEED=false to skip), and a ready banner.
import path from "node:path";
import { env } from "../kit/config.js";
import { LaunchError, type ProcessSpec, repoRoot } from "./lib/launcher.js";
import { type DemoData, seedDemo } from "./lib/seed.js";
import { grpcurlCommand, Supervisor, shellJson } from "./lib/supervisor.js";

const host = env.string("SHOP_HOST", "127.0.0.1");
const dataDir = path.resolve(env.string("SHOP_DATA_DIR", path.join(repoRoot, "data")));
const logDir = path.join(dataDir, "logs");
const seed = !process.argv.includes("--no-seed") && env.bool("SHOP_SEED", true);

const ports = {
  user: env.int("SHOP_USER_PORT", 50051),
  product: env.int("SHOP_PRODUCT_PORT", 50052),
  order: env.int("SHOP_ORDER_PORT", 50053),
};
const addr = (port: number) => `${host}:${port}`;
const specs: ProcessSpec[] = [
  { name: "user", service: "user", host, port: ports.user },
  { name: "product", service: "product", host, port: ports.product },
  {
    name: "order",
    service: "order",
    host,
    port: ports.order,
    env: { SHOP_USER_ADDR: addr(ports.user), SHOP_PRODUCT_ADDR: addr(ports.product) },
  },
];

const supervisor = new Supervisor();

function banner(demo: DemoData): string {
  const grpcurl = grpcurlCommand();
  const call = (port: number, method: string, body?: object) =>
    `  ${grpcurl} -plaintext ${body ? `-d ${shellJson(body)} ` : ""}${addr(port)} ${method}`;
  const lines = [
    "",
    "shopmesh is ready",
    `  user     ${addr(ports.user)}   shop.user.v1.UserService`,
    `  product  ${addr(ports.product)}   shop.product.v1.ProductService`,
    `  order    ${addr(ports.order)}   shop.order.v1.OrderService`,
    `  data ${dataDir}, logs ${logDir}`,
    "",
    "Try it (reflection is on, no proto files needed):",
    call(ports.user, "list"),
    call(ports.order, "describe shop.order.v1.OrderService"),
  ];
  if (demo.userId)
    lines.push(call(ports.user, "shop.user.v1.UserService/GetUser", { user_id: demo.userId }));
  else {
    lines.push(
      call(ports.user, "shop.user.v1.UserService/CreateUser", {
        user: { email: "you@example.com", display_name: "You" },
      }),
    );
  }
  lines.push(call(ports.product, "shop.product.v1.ProductService/ListProducts", { page_size: 10 }));
  const [productId] = demo.productIds;
  if (demo.userId && productId) {
    lines.push(
      call(ports.order, "shop.order.v1.OrderService/CreateOrder", {
        user_id: demo.userId,
        lines: [{ product_id: productId, quantity: 1 }],
        request_id: "demo-order-1",
      }),
      call(ports.order, "shop.order.v1.OrderService/ListOrders", { user_id: demo.userId }),
    );
  }
  lines.push(
    call(ports.order, "grpc.health.v1.Health/Check", { service: "shop.order.v1.OrderService" }),
    "",
    "Ctrl-C stops all three.",
    "",
  );
  return lines.join("\n");
}

supervisor.handleSignals();

try {
  const started = Date.now();
  console.log(`starting user, product and order; logs in ${logDir}`);
  await supervisor.startServices(
    specs.map((spec) => ({ ...spec, env: { SHOP_DATA_DIR: dataDir, ...spec.env } })),
    logDir,
    {
      started,
      onServing: (proc) =>
        supervisor.onUnexpectedExit(proc, (how) => {
          console.error(`\n${proc.spec.name} exited unexpectedly (${how}); see ${proc.logFile}`);
          void supervisor.stopAll(1);
        }),
    },
  );
  const demo = await seedDemo(addr(ports.user), addr(ports.product), seed);
  console.log(banner(demo));
} catch (error) {
  console.error(error instanceof LaunchError ? error.message : error);
  await supervisor.stopAll(1);
}
