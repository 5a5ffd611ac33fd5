// Health/List through the edge: a real Envoy with the repo's config, in front of one grpc-js
// server per cluster that serves grpc.health.v1 for its service's proto services, as a shop
// service does. The edge lists every public service with the status its own cluster gives it,
// the same status Health/Check through the edge answers, and never an internal service.
import * as grpc from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { HealthImplementation } from "grpc-health-check";
import {
  type HealthCheckResponse,
  HealthClient,
  type HealthListResponse,
  HealthCheckResponse_ServingStatus as Status,
} from "../../gen/ts/health/v1/health.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { startEnvoy } from "../helpers/envoy.js";
import { eventually } from "../helpers/eventually.js";

/** A server for one service: health for "" and for each proto service it serves. */
async function replicaOf(t: ExecutionContext, service: ServiceName) {
  const served = registry.get(service).protoServices;
  const health = new HealthImplementation(
    Object.fromEntries([["", "SERVING"], ...served.map((name) => [name, "SERVING"])]),
  );
  const server = new grpc.Server();
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  t.teardown(() => server.forceShutdown());
  return { served, health, server, endpoint: { host: "127.0.0.1", port } };
}

test("Health/List through the edge: every public service from its own cluster, as Check answers it", async (t) => {
  const user = await replicaOf(t, "user");
  const product = await replicaOf(t, "product");
  const order = await replicaOf(t, "order");
  const envoy = await startEnvoy({
    services: { user: [user.endpoint], product: [product.endpoint], order: [order.endpoint] },
    healthCheckIntervalMs: 250,
  });
  t.teardown(() => envoy.stop());
  const client = new HealthClient(envoy.address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const list = () =>
    new Promise<Record<string, Status>>((resolve, reject) =>
      client.list(
        {},
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
        (error, response?: HealthListResponse) =>
          error || !response
            ? reject(error)
            : resolve(
                Object.fromEntries(
                  Object.entries(response.statuses).map(([name, { status }]) => [name, status]),
                ),
              ),
      ),
    );
  const check = (service: string) =>
    new Promise<Status | string>((resolve) =>
      client.check(
        { service },
        new grpc.Metadata(),
        { deadline: Date.now() + 5_000 },
        (error, response) =>
          resolve(error ? `${grpc.status[error.code]}` : (response as HealthCheckResponse).status),
      ),
    );

  /** The edge's list once it says `service` is NOT_SERVING. */
  const listedNotServing = (service: string) =>
    eventually(`${service} NOT_SERVING in the edge's list`, async () => {
      const statuses = await list();
      return statuses[service] === Status.NOT_SERVING ? statuses : undefined;
    });
  const every = (status: Status) =>
    Object.fromEntries(["", ...registry.publicServices].map((name) => [name, status]));
  t.deepEqual(await list(), every(Status.SERVING));
  t.true(product.served.some((name) => registry.internalServices.includes(name)));

  // Product's only replica stops serving its public service: Envoy keeps routing to it (no
  // healthy host is left, so it balances over all), and both answers say NOT_SERVING.
  product.health.setStatus("shop.product.v1.ProductService", "NOT_SERVING");
  t.deepEqual(await listedNotServing("shop.product.v1.ProductService"), {
    ...every(Status.SERVING),
    "shop.product.v1.ProductService": Status.NOT_SERVING,
  });
  t.is(await check("shop.product.v1.ProductService"), Status.NOT_SERVING);

  // Order's replica is gone: its cluster cannot answer, so its services are NOT_SERVING. "" is
  // the edge's own health, as Check of "" answers it.
  order.server.forceShutdown();
  t.deepEqual(await listedNotServing("shop.order.v1.OrderService"), {
    ...every(Status.SERVING),
    "shop.product.v1.ProductService": Status.NOT_SERVING,
    "shop.order.v1.OrderService": Status.NOT_SERVING,
  });
  t.is(await check(""), Status.SERVING);
});
