// What the benchmark loads: each target is one RPC on one path (direct or through Envoy).
import { fileURLToPath } from "node:url";
import type { ServiceName } from "../../services/registry.js";
import type { CallSpec } from "./ghz.js";

export const ECHO_PROTO = fileURLToPath(new URL("../echo/echo.proto", import.meta.url));
export const SHOP_PROTOSET = fileURLToPath(
  new URL("../../gen/descriptor/shop.binpb", import.meta.url),
);

/** The processes a run can measure. */
export type ProcessName = "echo" | "kit-echo" | ServiceName | "envoy";

/** Ids and addresses a target's request and address come from. */
export interface TargetContext {
  addresses: Partial<Record<ProcessName, string>>;
  userId: string;
  /** A product with stock for every order the run can place. */
  productId: string;
}

export interface Target {
  id: string;
  /** Short label for tables and the chart. */
  label: string;
  /** One line for the README and the report. */
  description: string;
  /** The process ghz calls. */
  entry: ProcessName;
  /** Every process the call passes through. */
  path: ProcessName[];
  call(ctx: TargetContext): CallSpec;
}

const shop = (call: string, data: Record<string, unknown>): CallSpec => ({
  call,
  schema: { protoset: SHOP_PROTOSET },
  data,
});

const getProduct = (ctx: TargetContext) =>
  shop("shop.product.v1.ProductService/GetProduct", { product_id: ctx.productId });

// A fresh request_id per call (ghz's {{newUUID}} template), so every call places a new order.
const createOrder = (ctx: TargetContext) =>
  shop("shop.order.v1.OrderService/CreateOrder", {
    user_id: ctx.userId,
    lines: [{ product_id: ctx.productId, quantity: 1 }],
    request_id: "{{newUUID}}",
  });

const echo = (): CallSpec => ({
  call: "bench.echo.v1.EchoService/Echo",
  schema: { proto: ECHO_PROTO },
  data: { message: "hello" },
});

/** Every target, in the order a run measures them (reads before the writes that grow tables). */
export const TARGETS: readonly Target[] = [
  {
    id: "echo",
    label: "echo",
    description: "bare grpc-js echo server: one unary method, no interceptors, no database",
    entry: "echo",
    path: ["echo"],
    call: echo,
  },
  {
    id: "kit-echo",
    label: "kit echo",
    description:
      "the same echo method served through the kit with its default middleware: log line, status mapping, x-request-id, deadline",
    entry: "kit-echo",
    path: ["kit-echo"],
    call: echo,
  },
  {
    id: "get-direct",
    label: "GetProduct direct",
    description: "ProductService.GetProduct on the product service's own port",
    entry: "product",
    path: ["product"],
    call: getProduct,
  },
  {
    id: "get-envoy",
    label: "GetProduct via Envoy",
    description: "the same GetProduct through Envoy's listener",
    entry: "envoy",
    path: ["envoy", "product"],
    call: getProduct,
  },
  {
    id: "list-products",
    label: "ListProducts 50",
    description: "ProductService.ListProducts, a page of 50, direct",
    entry: "product",
    path: ["product"],
    call: () =>
      shop("shop.product.v1.ProductService/ListProducts", { page_size: 50, page_token: "" }),
  },
  {
    id: "create-direct",
    label: "CreateOrder direct",
    description:
      "OrderService.CreateOrder on the order service's port: GetUser, ReserveStock, write, CommitReservation",
    entry: "order",
    path: ["order", "user", "product"],
    call: createOrder,
  },
  {
    id: "create-envoy",
    label: "CreateOrder via Envoy",
    description: "the same CreateOrder through Envoy (the saga's own calls stay direct)",
    entry: "envoy",
    path: ["envoy", "order", "user", "product"],
    call: createOrder,
  },
];

export function targetById(id: string): Target {
  const target = TARGETS.find((candidate) => candidate.id === id);
  if (!target) {
    throw new Error(`unknown target "${id}"; one of ${TARGETS.map((t) => t.id).join(", ")}`);
  }
  return target;
}
