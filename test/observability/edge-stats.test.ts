// Envoy's stats and access log do not grow with what outside callers send: a gRPC-Web call to a
// method the contract lacks, on a routed service, makes no stat named after it (grpc_stats already
// counts the contract's methods, gRPC-Web's included, under its allowlist), and a long path is
// logged cut.
import * as grpc from "@grpc/grpc-js";
import test from "ava";
import { HealthImplementation } from "grpc-health-check";
import { routedServices } from "../../deploy/envoy/topology.js";
import { startEnvoy } from "../helpers/envoy.js";
import { eventually } from "../helpers/eventually.js";

/** A grpc-js server on port 0 that serves only grpc.health.v1, SERVING every shop service. */
async function upstream(t: import("ava").ExecutionContext) {
  const server = new grpc.Server();
  new HealthImplementation(
    Object.fromEntries(routedServices().map(({ fullName }) => [fullName, "SERVING" as const])),
  ).addToServer(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  t.teardown(() => server.forceShutdown());
  return [{ host: "127.0.0.1", port }];
}

test("gRPC-Web calls to made-up methods add no Envoy stats", async (t) => {
  const hosts = await upstream(t);
  const envoy = await startEnvoy({ services: { user: hosts, product: hosts, order: hosts } });
  t.teardown(() => envoy.stop());

  const names = Array.from({ length: 5 }, (_, i) => `MadeUp${i}x${process.pid}`);
  for (const name of names) {
    const response = await fetch(
      `http://127.0.0.1:${envoy.port}/shop.product.v1.ProductService/${name}`,
      {
        method: "POST",
        headers: { "content-type": "application/grpc-web+proto", "x-grpc-web": "1" },
        body: new Uint8Array(5),
      },
    );
    t.is(response.status, 200);
    await response.arrayBuffer();
  }
  // The calls went through to the upstream, which answered them UNIMPLEMENTED.
  t.true((await envoy.counter("cluster.product.upstream_rq_completed")) >= names.length);
  const stats = await envoy.admin("/stats");
  for (const name of names) t.false(stats.includes(name), `a stat names ${name}`);
});

test("the access log keeps a caller's path to 256 characters", async (t) => {
  const envoy = await startEnvoy({ services: {}, waitHealthy: false });
  t.teardown(() => envoy.stop());
  // HPACK lets a caller send a path like this again as one byte: unbounded, each cost a 4 KB line.
  const id = `long-path-${process.pid}`;
  const response = await fetch(`http://127.0.0.1:${envoy.port}/products/${"x".repeat(4_000)}`, {
    headers: { "x-request-id": id },
  });
  await response.arrayBuffer();
  const line = await eventually("the request's access log line", () =>
    envoy.accessLog().find((entry) => entry.x_request_id === id),
  );
  t.is(String(line.path).length, 256);
});
