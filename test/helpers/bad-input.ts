// What the bad-input tests share: a read-only snapshot of what the fleet holds, a check that
// every server still serves, and raw bytes past every serializer (the bad-input, wire-garbage,
// validation and fault tests all send them).
import * as grpc from "@grpc/grpc-js";
import type { ExecutionContext } from "ava";
import { HealthCheckResponse_ServingStatus, HealthService } from "../../gen/ts/health/v1/health.js";
import { ListOrdersRequest } from "../../gen/ts/shop/order/v1/order.js";
import { ListProductsRequest } from "../../gen/ts/shop/product/v1/product.js";
import { ListUsersRequest } from "../../gen/ts/shop/user/v1/user.js";
import { createClient } from "../../kit/client/index.js";
import { type ErrorDetails, fromGrpcError, type ServiceError } from "../../kit/errors.js";
import { adminMetadata } from "./credentials.js";
import type { TestFleet } from "./fleet.js";

export const MB = 1_000_000;
export const huge = "x".repeat(MB);

/** What the fleet holds, read only through its rpcs. */
export async function snapshot(fleet: TestFleet, productIds: string[] = []) {
  const [users, products, orders] = await Promise.all([
    fleet.users.listUsers(ListUsersRequest.fromPartial({ pageSize: 1000 })),
    fleet.products.listProducts(ListProductsRequest.fromPartial({ pageSize: 1000 })),
    fleet.orders.listOrders(ListOrdersRequest.fromPartial({ pageSize: 1000 })),
  ]);
  const stock = await Promise.all(
    productIds.map(
      async (productId) => (await fleet.products.getProduct({ productId })).product?.stockQuantity,
    ),
  );
  return {
    users: users.users.map((u) => u.userId),
    products: products.products.map((p) => [p.productId, p.stockQuantity, p.updateTime]),
    orders: orders.orders.map((o) => o.orderId),
    stock,
  };
}

/** Each server still answers health checks and a real read. */
export async function stillServing(t: ExecutionContext, fleet: TestFleet) {
  for (const [service, name] of [
    [fleet.user, "shop.user.v1.UserService"],
    [fleet.product, "shop.product.v1.ProductService"],
    [fleet.order, "shop.order.v1.OrderService"],
  ] as const) {
    const health = createClient(HealthService, service.server.address);
    t.teardown(() => health.close());
    const { status } = await health.check({ service: name });
    t.is(status, HealthCheckResponse_ServingStatus.SERVING, name);
  }
  await fleet.users.listUsers(ListUsersRequest.fromPartial({}));
  await fleet.products.listProducts(ListProductsRequest.fromPartial({}));
  await fleet.orders.listOrders(ListOrdersRequest.fromPartial({}));
}

/** A unary call of `path` with `bytes` as the request message, and how it ended. */
export type RawCall = (
  path: string,
  bytes: Uint8Array,
) => Promise<{ error?: ServiceError; response?: Buffer }>;

/**
 * A plain grpc-js client that sends raw bytes as the request message, past every serializer.
 * The caller closes it; rawClient does so at the end of a test.
 */
export function openRawClient(
  address: string,
  timeoutMs = 10_000,
  transport: { credentials: grpc.ChannelCredentials; options?: grpc.ChannelOptions } = {
    credentials: grpc.credentials.createInsecure(),
  },
): RawCall & { close(): void } {
  const client = new grpc.Client(address, transport.credentials, transport.options);
  const identity = (b: Buffer) => b;
  const call: RawCall = (path, bytes) =>
    new Promise((resolve) => {
      client.makeUnaryRequest(
        path,
        identity,
        identity,
        Buffer.from(bytes),
        adminMetadata(),
        { deadline: Date.now() + timeoutMs },
        (error, response) =>
          resolve(error ? { error: fromGrpcError(error) } : { ...(response && { response }) }),
      );
    });
  return Object.assign(call, { close: () => client.close() });
}

/** A raw-bytes client for one test, closed by its teardown. */
export function rawClient(t: ExecutionContext, address: string): RawCall {
  const client = openRawClient(address);
  t.teardown(() => client.close());
  return client;
}

/** Bytes that are not a protobuf message of any type. */
export const undecodable: [string, Buffer][] = [
  [
    "a length-delimited field longer than the message",
    Buffer.from([0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f]),
  ],
  ["a truncated varint", Buffer.from([0x08, 0xff])],
  ["a truncated string", Buffer.from([0x0a, 0x05, 0x61, 0x62])],
  ["an invalid wire type", Buffer.from([0x0f])],
  ["a truncated nested message", Buffer.from([0x12, 0x05, 0x0a])],
  ["field number 0", Buffer.from([0x02, 0x00])],
  ["an end-group tag with no start", Buffer.from([0x0c])],
  // Field 127, which no request has: its value is skipped, not decoded, and must still be one.
  [
    "a varint of 12 bytes in an unknown field",
    Buffer.from([0xf8, 0x07, ...Array(11).fill(0x80), 0x01]),
  ],
];

export const domainOf = (details: ErrorDetails | undefined) =>
  (details as (ErrorDetails & { domain?: string }) | undefined)?.domain;
