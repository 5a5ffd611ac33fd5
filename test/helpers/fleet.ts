// Real servers on port 0 with in-memory databases, and typed clients to them. Every start is
// paired with a teardown, so a failing test never leaves a server running.
import { Writable } from "node:stream";
import type { ExecutionContext } from "ava";
import { pino } from "pino";
import { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { type Product, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { type User, UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { type Client, createClient } from "../../kit/client.js";
import type { Logger } from "../../kit/logger.js";
import { type ServiceModule, type StartedService, startService } from "../../kit/main.js";
import { createOrderService, type OrderSettings } from "../../services/order/service.js";
import { createProductService, type ProductSettings } from "../../services/product/service.js";
import { userService } from "../../services/user/service.js";

/** A pino logger whose lines the test can read. */
export function captureLogger(service: string): {
  logger: Logger;
  lines: Record<string, unknown>[];
} {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _encoding, done) {
      for (const line of String(chunk).split("\n")) if (line) lines.push(JSON.parse(line));
      done();
    },
  });
  return { logger: pino({ level: "info", base: { service } }, sink), lines };
}

/** Starts one service on 127.0.0.1:0 with its own in-memory database. */
export async function start(
  t: ExecutionContext,
  module: ServiceModule,
  options: { logger?: Logger; database?: string } = {},
): Promise<StartedService> {
  const service = await startService(module, {
    host: "127.0.0.1",
    port: 0,
    database: options.database ?? ":memory:",
    logLevel: "silent",
    shutdownGraceMs: 2_000,
    ...(options.logger && { logger: options.logger }),
  });
  t.teardown(() => service.stop());
  return service;
}

export function clientsFor(
  t: ExecutionContext,
  addresses: { user?: string; product?: string; order?: string },
) {
  const make = <S extends Parameters<typeof createClient>[0]>(
    definition: S,
    address: string,
    name: string,
  ) => {
    const client = createClient(definition, address, {
      serviceName: name,
      defaultTimeoutMs: 10_000,
    });
    t.teardown(() => client.close());
    return client;
  };
  return {
    users: make(UserServiceService, addresses.user ?? "127.0.0.1:1", "shop.user.v1.UserService"),
    products: make(
      ProductServiceService,
      addresses.product ?? "127.0.0.1:1",
      "shop.product.v1.ProductService",
    ),
    orders: make(
      OrderServiceService,
      addresses.order ?? "127.0.0.1:1",
      "shop.order.v1.OrderService",
    ),
  };
}

export interface TestMesh {
  user: StartedService;
  product: StartedService;
  order: StartedService;
  users: Client<typeof UserServiceService>;
  products: Client<typeof ProductServiceService>;
  orders: Client<typeof OrderServiceService>;
}

/** All three services wired together, the order service dialling the other two directly. */
export async function startMesh(
  t: ExecutionContext,
  options: {
    order?: Partial<OrderSettings>;
    product?: Partial<ProductSettings>;
    loggers?: { user?: Logger; product?: Logger; order?: Logger };
  } = {},
): Promise<TestMesh> {
  const [user, product] = await Promise.all([
    start(t, userService, { ...(options.loggers?.user && { logger: options.loggers.user }) }),
    start(t, createProductService({ sweepMs: 100, ...options.product }), {
      ...(options.loggers?.product && { logger: options.loggers.product }),
    }),
  ]);
  const order = await start(
    t,
    createOrderService({
      userAddr: user.server.address,
      productAddr: product.server.address,
      reconcileMs: 200,
      watchPollMs: 100,
      ...options.order,
    }),
    { ...(options.loggers?.order && { logger: options.loggers.order }) },
  );
  return {
    user,
    product,
    order,
    ...clientsFor(t, {
      user: user.server.address,
      product: product.server.address,
      order: order.server.address,
    }),
  };
}

let serial = 0;

export async function createUser(users: Client<typeof UserServiceService>): Promise<User> {
  serial++;
  const { user } = await users.createUser({
    user: {
      userId: "",
      email: `shopper${serial}.${process.pid}.${Date.now()}@example.com`,
      displayName: `Shopper ${serial}`,
      createTime: undefined,
      updateTime: undefined,
    },
  });
  return user as User;
}

export async function createProduct(
  products: Client<typeof ProductServiceService>,
  fields: { stock?: number; amountMinor?: string; currencyCode?: string; name?: string } = {},
): Promise<Product> {
  const { product } = await products.createProduct({
    product: {
      productId: "",
      name: fields.name ?? "Test mug",
      description: "",
      price: {
        currencyCode: fields.currencyCode ?? "EUR",
        amountMinor: fields.amountMinor ?? "1000",
      },
      stockQuantity: fields.stock ?? 10,
      createTime: undefined,
      updateTime: undefined,
    },
  });
  return product as Product;
}

export const orderLine = (productId: string, quantity: number) => ({
  productId,
  quantity,
  unitPrice: undefined,
});
