// What the benchmark loads: each target is one RPC on one path (direct or through Envoy).
import { fileURLToPath } from "node:url";
import type { ServiceName } from "../../services/registry.js";
import type { CallSpec } from "./ghz.js";

export const ECHO_PROTO = fileURLToPath(new URL("../echo/echo.proto", import.meta.url));
export const shopProtoset = fileURLToPath(
  new URL("../../gen/descriptor/shop.binpb", import.meta.url),
);

/**
 * Where a fleet keeps its data, past the default (SQLite through better-sqlite3): SQLite through
 * the sqlite3 driver, or PostgreSQL. Each one the targets need is a fleet of its own.
 */
export type Storage = "sqlite3" | "postgres";

/**
 * The processes a run can measure: the echo servers, and fleets of the services: the
 * development profile (plaintext) with Envoy; prefixed `tls-`, the production shape (TLS at the
 * edge, mutual TLS inside), so that one run states the cost of TLS and token checks; and, suffixed
 * `@<storage>`, the development profile on another storage, with the PostgreSQL server and its
 * connection processes.
 */
export type ProcessName =
  | "echo"
  | "kit-echo"
  | ServiceName
  | "envoy"
  | `tls-${ServiceName}`
  | "tls-envoy"
  | `${ServiceName}@${Storage}`
  | "postgres";

/**
 * The fleets a run may start: the two profiles on the default storage, and the development
 * profile on each other storage.
 */
export type Fleet = "plaintext" | "tls" | Storage;

/** The data seeded into one fleet, and the token of its shopper. */
export interface FleetData {
  userId: string;
  /** A product with stock for every order the run can place. */
  productId: string;
  /** A bearer token for userId. */
  token: string;
}

/** Ids and addresses a target's request and address come from. */
export interface TargetContext {
  addresses: Partial<Record<ProcessName, string>>;
  fleets: Partial<Record<Fleet, FleetData>>;
  /** The development credentials (CA, the cli identity). */
  certs: string;
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

const fleetData = (ctx: TargetContext, fleet: Fleet): FleetData => {
  const data = ctx.fleets[fleet];
  if (!data) throw new Error(`the ${fleet} fleet was not seeded`);
  return data;
};

/** Signed in as the fleet's shopper. */
const signedIn = (ctx: TargetContext, fleet: Fleet) => ({
  authorization: `Bearer ${fleetData(ctx, fleet).token}`,
});

/** TLS to Envoy's listener: the development CA. */
const edgeTls = (ctx: TargetContext) => ({ ca: `${ctx.certs}/ca.crt` });

/** Mutual TLS to a service's own port, as the cli identity, checking the service's name. */
const meshTls = (ctx: TargetContext, service: ServiceName) => ({
  ca: `${ctx.certs}/ca.crt`,
  cert: `${ctx.certs}/cli.crt`,
  key: `${ctx.certs}/cli.key`,
  serverName: service,
});

const shop = (call: string, data: Record<string, unknown>): CallSpec => ({
  call,
  schema: { protoset: shopProtoset },
  data,
});

// GetProduct is open: the plaintext targets send no token, the TLS ones the shopper's, so their
// difference is all of TLS and a token check at each hop.
const getProduct = (fleet: Fleet) => (ctx: TargetContext) =>
  shop("shop.product.v1.ProductService/GetProduct", {
    product_id: fleetData(ctx, fleet).productId,
  });

// A fresh request_id per call (ghz's {{newUUID}} template), so every call places a new order. It
// always needs the shopper's token: the plaintext and TLS targets differ by TLS alone.
const createOrder = (fleet: Fleet) => (ctx: TargetContext) => ({
  ...shop("shop.order.v1.OrderService/CreateOrder", {
    user_id: fleetData(ctx, fleet).userId,
    lines: [{ product_id: fleetData(ctx, fleet).productId, quantity: 1 }],
    request_id: "{{newUUID}}",
  }),
  metadata: signedIn(ctx, fleet),
});

// One unit of the fleet's one product, committed at once, under a fresh reservation id: every
// call takes that product's row, as every order for a best seller does. The development profile
// checks no mesh identity, so ghz may call the order service's private API.
const reserveStock = (fleet: Fleet) => (ctx: TargetContext) =>
  shop("shop.product.v1.InventoryService/ReserveStock", {
    reservation_id: "{{newUUID}}",
    lines: [{ product_id: fleetData(ctx, fleet).productId, quantity: 1 }],
    commit: true,
  });

const secured =
  (
    call: (ctx: TargetContext) => CallSpec,
    tls: (ctx: TargetContext) => NonNullable<CallSpec["tls"]>,
  ) =>
  (ctx: TargetContext): CallSpec => ({
    ...call(ctx),
    metadata: signedIn(ctx, "tls"),
    tls: tls(ctx),
  });

const echo = (): CallSpec => ({
  call: "bench.echo.v1.EchoService/Echo",
  schema: { proto: ECHO_PROTO },
  data: { message: "hello" },
});

/** A direct target of the development profile: on the default storage, or on another's fleet. */
type DirectTarget = (fleet: "plaintext" | Storage) => Target;

const STORAGE_NAMES: Record<Storage, { id: string; label: string; text: string }> = {
  sqlite3: { id: "sqlite3", label: "sqlite3", text: "on SQLite through the sqlite3 driver" },
  postgres: {
    id: "pg",
    label: "PostgreSQL",
    text: "on PostgreSQL (a local server the run starts)",
  },
};

const getDirect: DirectTarget = (fleet) => ({
  id: "get-direct",
  label: "GetProduct direct",
  description: "ProductService.GetProduct on the product service's own port",
  entry: "product",
  path: ["product"],
  call: getProduct(fleet),
});

const createDirect: DirectTarget = (fleet) => ({
  id: "create-direct",
  label: "CreateOrder direct",
  description:
    "OrderService.CreateOrder on the order service's port: GetUser, write, ReserveStock (committed), confirm",
  entry: "order",
  path: ["order", "user", "product"],
  call: createOrder(fleet),
});

const reserveDirect: DirectTarget = (fleet) => ({
  id: "reserve-direct",
  label: "ReserveStock direct",
  description:
    "InventoryService.ReserveStock of one unit of the one product, committed, on the product service's port",
  entry: "product",
  path: ["product"],
  call: reserveStock(fleet),
});

/** A direct target again on other storages (each by default): a fleet of its own, the same call. */
function onStorage(
  target: DirectTarget,
  description: string,
  storages: readonly Storage[] = ["sqlite3", "postgres"],
): Target[] {
  return storages.map((storage) => {
    const { id, label, text } = STORAGE_NAMES[storage];
    const base = target(storage);
    const services = base.path.map((name) => `${name}@${storage}` as ProcessName);
    return {
      ...base,
      id: `${base.id}-${id}`,
      label: `${base.label}, ${label}`,
      description: `${description} ${text}`,
      entry: `${base.entry}@${storage}` as ProcessName,
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
  getDirect("plaintext"),
  ...onStorage(getDirect, "the same GetProduct"),
  {
    id: "get-envoy",
    label: "GetProduct via Envoy",
    description: "the same GetProduct through Envoy's listener",
    entry: "envoy",
    path: ["envoy", "product"],
    call: getProduct("plaintext"),
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
  createDirect("plaintext"),
  ...onStorage(createDirect, "the same CreateOrder"),
  // Where a busy product's row lock shows: on PostgreSQL, whose reservations wait for each other.
  ...onStorage(reserveDirect, "ReserveStock of one product's unit, committed,", ["postgres"]),
  {
    id: "create-envoy",
    label: "CreateOrder via Envoy",
    description: "the same CreateOrder through Envoy (the saga's own calls stay direct)",
    entry: "envoy",
    path: ["envoy", "order", "user", "product"],
    call: createOrder("plaintext"),
  },
  {
    id: "get-direct-tls",
    label: "GetProduct direct, mTLS+JWT",
    description:
      "GetProduct on the product port of the production-shape fleet: mutual TLS, a token checked",
    entry: "tls-product",
    path: ["tls-product"],
    call: secured(getProduct("tls"), (ctx) => meshTls(ctx, "product")),
  },
  {
    id: "get-envoy-tls",
    label: "GetProduct via Envoy, TLS+JWT",
    description:
      "the same through Envoy: TLS at the edge, the token checked by Envoy and the service, mutual TLS to it",
    entry: "tls-envoy",
    path: ["tls-envoy", "tls-product"],
    call: secured(getProduct("tls"), edgeTls),
  },
  {
    id: "create-direct-tls",
    label: "CreateOrder direct, mTLS",
    description:
      "CreateOrder on the production-shape fleet: mutual TLS on every hop, the token checked by order and user",
    entry: "tls-order",
    path: ["tls-order", "tls-user", "tls-product"],
    call: secured(createOrder("tls"), (ctx) => meshTls(ctx, "order")),
  },
  {
    id: "create-envoy-tls",
    label: "CreateOrder via Envoy, TLS",
    description: "the same CreateOrder through Envoy's TLS listener",
    entry: "tls-envoy",
    path: ["tls-envoy", "tls-order", "tls-user", "tls-product"],
    call: secured(createOrder("tls"), edgeTls),
  },
];

export function targetById(id: string): Target {
  const target = TARGETS.find((candidate) => candidate.id === id);
  if (!target) {
    throw new Error(`unknown target "${id}"; one of ${TARGETS.map((t) => t.id).join(", ")}`);
  }
  return target;
}
