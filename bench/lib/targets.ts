// What the benchmark loads: each target is one RPC on one path (direct or through Envoy).
import { fileURLToPath } from "node:url";
import type { ServiceName } from "../../services/registry.js";
import type { CallSpec } from "./ghz.js";

export const ECHO_PROTO = fileURLToPath(new URL("../echo/echo.proto", import.meta.url));
export const SHOP_PROTOSET = fileURLToPath(
  new URL("../../gen/descriptor/shop.binpb", import.meta.url),
);

/**
 * Where a fleet keeps its data, past the default (SQLite through better-sqlite3): SQLite through
 * the sqlite3 driver, or PostgreSQL. Each one the targets need is a fleet of its own.
 */
export type Storage = "sqlite3" | "postgres";

/**
 * The processes a run can measure: a service of the default fleet, or of another storage's
 * (`product@postgres`), and the PostgreSQL server with its connection processes.
 */
export type ProcessName =
  | "echo"
  | "kit-echo"
  | ServiceName
  | `${ServiceName}@${Storage}`
  | "envoy"
  | "postgres";

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
  /** The storage of the fleet it calls, when not the default. */
  storage?: Storage;
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

const STORAGE_NAMES: Record<Storage, { id: string; label: string; text: string }> = {
  sqlite3: { id: "sqlite3", label: "sqlite3", text: "on SQLite through the sqlite3 driver" },
  postgres: {
    id: "pg",
    label: "PostgreSQL",
    text: "on PostgreSQL (a local server the run starts)",
  },
};

const getDirect: Target = {
  id: "get-direct",
  label: "GetProduct direct",
  description: "ProductService.GetProduct on the product service's own port",
  entry: "product",
  path: ["product"],
  call: getProduct,
};

const createDirect: Target = {
  id: "create-direct",
  label: "CreateOrder direct",
  description:
    "OrderService.CreateOrder on the order service's port: GetUser, ReserveStock, write, CommitReservation",
  entry: "order",
  path: ["order", "user", "product"],
  call: createOrder,
};

/** A direct target again on each other storage: a fleet of its own, the same call. */
function onStorage(target: Target, description: string): Target[] {
  return (["sqlite3", "postgres"] as const).map((storage) => {
    const { id, label, text } = STORAGE_NAMES[storage];
    const services = target.path.map((name) => `${name}@${storage}` as ProcessName);
    return {
      ...target,
      id: `${target.id}-${id}`,
      label: `${target.label}, ${label}`,
      description: `${description} ${text}`,
      entry: `${target.entry}@${storage}` as ProcessName,
      path: storage === "postgres" ? [...services, "postgres"] : services,
      storage,
    };
  });
}

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
  getDirect,
  ...onStorage(getDirect, "the same GetProduct"),
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
  createDirect,
  ...onStorage(createDirect, "the same CreateOrder"),
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
