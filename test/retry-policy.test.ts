// Retry policy lives in the contract: every rpc declares `option idempotency_level`, and the two
// places that retry calls, the clients' gRPC service config and Envoy's routes, both read it from
// the descriptor set and agree on what may be repeated after it reached a server.
import { once } from "node:events";
import { readFile } from "node:fs/promises";
import http2 from "node:http2";
import type { AddressInfo } from "node:net";
import path from "node:path";
import test from "ava";
import { parse } from "yaml";
import { envoyConfig } from "../deploy/envoy/config.js";
import { localTopology } from "../deploy/envoy/topology.js";
import {
  GetProductResponse,
  Product,
  ProductServiceService,
} from "../gen/ts/shop/product/v1/product.js";
import {
  createClient,
  type HEDGING_POLICY,
  type RETRY_POLICY,
  serviceConfigFor,
} from "../kit/client/index.js";
import type { ServiceDefinition } from "../kit/contract.js";
import {
  contractMethods,
  contractRegistry,
  hedgeAfterS,
  hedged,
  type MethodInfo,
  retriable,
} from "../kit/contract.js";
import { Code, type ServiceError } from "../kit/errors.js";
import { repoRoot } from "../scripts/lib/launcher.js";
import { registry } from "../services/registry.js";
import { grpcFrame } from "./helpers/grpc-frame.js";

interface Route {
  match: { path?: string };
  route?: {
    retry_policy?: { retry_on: string; per_try_timeout?: string };
    hedge_policy?: { hedge_on_per_try_timeout?: boolean };
  };
}

type MethodConfig = {
  name: { service: string; method: string }[];
  retryPolicy?: typeof RETRY_POLICY;
  hedgingPolicy?: typeof HEDGING_POLICY;
};

/** The exact-path routes of a config. */
function exactRoutes(config: unknown): Route[] {
  // biome-ignore lint/suspicious/noExplicitAny: walking a parsed config document
  const hcm = (config as any).static_resources.listeners[0].filter_chains[0].filters[0]
    .typed_config;
  return (hcm.route_config.virtual_hosts[0].routes as Route[]).filter((route) => route.match.path);
}

/** Envoy's retry conditions of each exact-path route of a config. */
function envoyRetries(config: unknown): Map<string, string[]> {
  return new Map(
    exactRoutes(config).map((route) => [
      route.match.path as string,
      route.route?.retry_policy?.retry_on.split(",") ?? [],
    ]),
  );
}

/** The delay (as "0.5s") of each rpc its method's contract hedges. */
const hedgeDelays = new Map<string, string>();

/** The paths Envoy hedges (per-try timeout, timed-out attempt left to go on), with their delay. */
function envoyHedges(config: unknown): Set<string> {
  return new Set(
    exactRoutes(config)
      .filter(
        (route) =>
          route.route?.retry_policy?.per_try_timeout ===
            hedgeDelays.get(route.match.path as string) &&
          route.route?.hedge_policy?.hedge_on_per_try_timeout,
      )
      .map((route) => route.match.path as string),
  );
}

const pathsOf = (entry: MethodConfig) =>
  entry.name.map((name) => `/${name.service}/${name.method}`);

/** The rpcs a client's service config retries or hedges on UNAVAILABLE, as "/Service/Method". */
function clientRetries(config: ReturnType<typeof serviceConfigFor>): Set<string> {
  return new Set(
    (config.methodConfig as MethodConfig[])
      .filter((entry) =>
        (
          entry.retryPolicy?.retryableStatusCodes ??
          entry.hedgingPolicy?.nonFatalStatusCodes ??
          []
        ).includes("UNAVAILABLE"),
      )
      .flatMap(pathsOf),
  );
}

/** The rpcs a client's service config hedges. */
function clientHedges(config: ReturnType<typeof serviceConfigFor>): Set<string> {
  return new Set(
    (config.methodConfig as MethodConfig[]).flatMap((entry) =>
      pathsOf(entry).filter(
        (path) =>
          entry.hedgingPolicy !== undefined &&
          entry.hedgingPolicy.hedgingDelay === hedgeDelays.get(path),
      ),
    ),
  );
}

/**
 * What is wrong with the retry policy of `methods`: an rpc without a declared level, or one that
 * the client retries after it reached a server (UNAVAILABLE) while Envoy does not (a reset), or
 * the other way round, or that Envoy retries when it may have had an effect without a promise.
 * An internal rpc must have no Envoy route at all; only its client side is checked.
 */
function disagreements(
  methods: readonly MethodInfo[],
  client: Set<string>,
  envoy: Map<string, string[]>,
): string[] {
  const problems: string[] = [];
  for (const method of methods) {
    if (!method.declared) problems.push(`${method.path} declares no idempotency_level`);
    const byClient = client.has(method.path);
    const conditions = envoy.get(method.path);
    if (internal.has(method.service)) {
      if (conditions) problems.push(`${method.path} is internal but Envoy routes it`);
      if (byClient !== retriable(method)) {
        problems.push(`${method.path}: retried against its level ${method.idempotency}`);
      }
      continue;
    }
    if (!conditions) {
      problems.push(`${method.path} has no Envoy route`);
      continue;
    }
    const byEnvoy = conditions.includes("reset");
    if (byClient !== byEnvoy) {
      problems.push(
        `${method.path}: the client ${byClient ? "retries" : "does not retry"} it after it reached a server, Envoy ${byEnvoy ? "does" : "does not"}`,
      );
    }
    if (byClient !== retriable(method)) {
      problems.push(`${method.path}: retried against its level ${method.idempotency}`);
    }
    for (const never of ["connect-failure", "refused-stream"]) {
      if (!conditions.includes(never)) problems.push(`${method.path}: Envoy skips ${never}`);
    }
  }
  return problems;
}

const registered = registry.services.flatMap(
  (service) => Object.values(service.module.serves) as ServiceDefinition[],
);

const internal = new Set(registry.services.flatMap((service) => service.internalServices));

const allMethods = registry.services.flatMap((service) =>
  service.protoServices.flatMap((name) => contractMethods(name)),
);
for (const method of allMethods.filter(hedged)) {
  hedgeDelays.set(method.path, `${hedgeAfterS(method)}s`);
}

const allClientRetries = () => {
  const retried = new Set<string>();
  for (const definition of registered) {
    for (const path of clientRetries(serviceConfigFor(definition))) retried.add(path);
  }
  return retried;
};

test("every shop proto service of the descriptor set is registered, and the other way round", (t) => {
  const described = [...contractRegistry().files]
    .filter((file) => file.proto.package.startsWith("shop."))
    .flatMap((file) => file.services.map((service) => service.typeName));
  t.deepEqual(
    described.sort(),
    registry.services.flatMap((service) => service.protoServices).sort(),
  );
});

test("every rpc declares its idempotency_level, and clients and Envoy retry alike", async (t) => {
  t.true(allMethods.length > 0);
  const committed = parse(
    await readFile(path.join(repoRoot, "deploy/envoy/envoy.yaml"), "utf8"),
  ) as unknown;
  // Both hedge the unary reads, and only them: Envoy those it routes.
  const reads = allMethods.filter(hedged).map((method) => method.path);
  const edgeReads = reads.filter((path) => !internal.has(path.split("/")[1] as string));
  for (const config of [envoyConfig(localTopology()), committed]) {
    t.deepEqual(disagreements(allMethods, allClientRetries(), envoyRetries(config)), []);
    t.deepEqual([...envoyHedges(config)].sort(), [...edgeReads].sort());
  }
  const clientHedged = registered.flatMap((definition) => [
    ...clientHedges(serviceConfigFor(definition, { direct: true })),
  ]);
  t.deepEqual(clientHedged.sort(), [...reads].sort());
  // A client of the front door leaves hedging to Envoy, and retries the same rpcs.
  for (const definition of registered) {
    t.deepEqual([...clientHedges(serviceConfigFor(definition))], []);
    t.deepEqual(
      [...clientRetries(serviceConfigFor(definition))].sort(),
      [...clientRetries(serviceConfigFor(definition, { direct: true }))].sort(),
    );
  }
  // What the contract says today, spelled out.
  t.deepEqual(
    allMethods.filter(hedged).map((method) => `${method.rpc} after ${hedgeAfterS(method)} s`),
    [
      "GetUser after 0.5 s",
      "ListUsers after 2 s",
      "GetProduct after 0.5 s",
      "ListProducts after 2 s",
      "GetOrder after 0.5 s",
      "ListOrders after 2 s",
    ],
  );
  t.deepEqual(
    allMethods.filter(retriable).map((method) => method.rpc),
    [
      "GetUser",
      "ListUsers",
      "GetProduct",
      "ListProducts",
      "ReserveStock",
      "CommitReservation",
      "ReleaseReservation",
      "GetOrder",
      "ListOrders",
      "CancelOrder",
      "WatchOrder",
    ],
  );
});

test("the agreement check catches a missing level and each side retrying on its own", (t) => {
  const envoy = envoyRetries(envoyConfig(localTopology()));
  const client = allClientRetries();
  const getUser = allMethods.find((method) => method.rpc === "GetUser") as MethodInfo;
  const createUser = allMethods.find((method) => method.rpc === "CreateUser") as MethodInfo;

  const undeclared = { ...createUser, declared: false };
  t.deepEqual(disagreements([undeclared], client, envoy), [
    "/shop.user.v1.UserService/CreateUser declares no idempotency_level",
  ]);

  const clientOnly = new Set([...client, createUser.path]);
  t.true(disagreements([createUser], clientOnly, envoy).length > 0, "client retries alone");

  const envoyOnly = new Map(envoy);
  envoyOnly.set(createUser.path, [...(envoy.get(createUser.path) ?? []), "reset"]);
  t.true(disagreements([createUser], client, envoyOnly).length > 0, "Envoy retries alone");

  const neither = new Set([...client].filter((path) => path !== getUser.path));
  const envoyNeither = new Map(envoy);
  envoyNeither.set(getUser.path, ["connect-failure", "refused-stream"]);
  t.deepEqual(disagreements([getUser], neither, envoyNeither), [
    "/shop.user.v1.UserService/GetUser: retried against its level NO_SIDE_EFFECTS",
  ]);
});

test("a client retries more only when its caller says so", (t) => {
  const order = registry.get("order").module.serves.OrderService as ServiceDefinition;
  t.false(clientRetries(serviceConfigFor(order)).has("/shop.order.v1.OrderService/CreateOrder"));
  t.true(
    clientRetries(serviceConfigFor(order, { alsoRetry: ["CreateOrder"] })).has(
      "/shop.order.v1.OrderService/CreateOrder",
    ),
  );
});

/**
 * An HTTP/2 server whose first `cuts` replies per path are cut short after their headers: as
 * Envoy cuts them when the replica behind it dies mid-reply (RST_STREAM(INTERNAL_ERROR)), or as
 * a replica's own death does (the connection drops). Then GetProduct gets a product.
 */
async function cuttingServer(cuts: number, how: "proxy reset" | "connection drop") {
  const streams = new Map<string, number>();
  const server = http2.createServer();
  server.on("stream", (stream, headers) => {
    const path = headers[":path"] as string;
    const seen = (streams.get(path) ?? 0) + 1;
    streams.set(path, seen);
    stream.on("error", () => {});
    stream.resume();
    stream.on("end", () => {
      if (seen <= cuts) {
        stream.respond({ ":status": 200, "content-type": "application/grpc" });
        if (how === "proxy reset") stream.close(http2.constants.NGHTTP2_INTERNAL_ERROR);
        else setImmediate(() => stream.session?.socket.destroy());
        return;
      }
      const body = GetProductResponse.encode({
        product: Product.create({ productId: "prd_1", name: "Cup" }),
      }).finish();
      stream.respond(
        { ":status": 200, "content-type": "application/grpc" },
        { waitForTrailers: true },
      );
      stream.on("wantTrailers", () => stream.sendTrailers({ "grpc-status": "0" }));
      stream.end(grpcFrame(body));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return {
    address: `127.0.0.1:${port}`,
    streams: (rpc: string) => streams.get(`/shop.product.v1.ProductService/${rpc}`) ?? 0,
    close: () => server.close(),
  };
}

for (const how of ["proxy reset", "connection drop"] as const) {
  test(`a reply cut short by a ${how} is sent once more, only by an rpc the client may repeat`, async (t) => {
    const server = await cuttingServer(1, how);
    t.teardown(server.close);
    const products = createClient(ProductServiceService, server.address);
    t.teardown(() => products.close());

    // GetProduct has no side effects: the client sends it again, and its answer arrives.
    const { product } = await products.getProduct({ productId: "prd_1" });
    t.is(product?.name, "Cup");
    t.is(server.streams("GetProduct"), 2);

    // UpdateProduct might have had its effect: the cut reply is the caller's to judge.
    const error = await t.throwsAsync(
      products.updateProduct({
        product: Product.create({ productId: "prd_1", name: "Mug" }),
        updateMask: ["name"],
      }),
    );
    t.is((error as ServiceError).code, how === "proxy reset" ? Code.INTERNAL : Code.UNAVAILABLE);
    t.is(server.streams("UpdateProduct"), 1);
  });

  test(`a reply cut short by a ${how} again is not sent a third time`, async (t) => {
    const server = await cuttingServer(Number.POSITIVE_INFINITY, how);
    t.teardown(server.close);
    const products = createClient(ProductServiceService, server.address);
    t.teardown(() => products.close());
    await t.throwsAsync(products.getProduct({ productId: "prd_1" }));
    t.is(server.streams("GetProduct"), 2);
  });
}
