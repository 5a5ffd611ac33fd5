// The Envoy front door: the committed configs match the generator, every RPC of the descriptor set
// is routed as its contract allows, the real Envoy accepts the configs, and test/helpers/envoy.ts
// starts a real Envoy that health-checks and proxies to grpc-js servers.
import { cp, mkdtemp, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import test from "ava";
import { HealthImplementation, service as healthService } from "grpc-health-check";
import { parse } from "yaml";
import { envoyConfig, envoyYaml } from "../deploy/envoy/config.js";
import { retryOn } from "../deploy/envoy/routes.js";
import {
  composeTopology,
  type EnvoyTopology,
  edgeCredentials,
  routedServices,
} from "../deploy/envoy/topology.js";
import { committedConfigs } from "../deploy/generate.js";
import { ENVOY_HEAP_MIB, ENVOY_MEMORY_LIMIT_MIB } from "../deploy/settings.js";
import { contractMethods, retriable } from "../kit/contract.js";
import { descriptorPath as DEFAULT_DESCRIPTOR_FILE } from "../kit/descriptor.js";
import { validateEnvoy, withLocalPaths } from "../scripts/lib/envoy-validate.js";
import { repoRoot } from "../scripts/lib/launcher.js";
import { CERTS } from "./helpers/credentials.js";
import { startEnvoy } from "./helpers/envoy.js";
import { eventually, until } from "./helpers/eventually.js";
import { exec } from "./helpers/exec.js";

const services = routedServices();
const COMMITTED = ["deploy/envoy/envoy.yaml", "deploy/envoy/envoy.compose.yaml"];

test("the committed Envoy and compose configs are what generate.ts writes now", async (t) => {
  // deploy/k8s has its own drift test (test/kubernetes.test.ts).
  const expected = Object.entries(committedConfigs()).filter(
    ([file]) => !file.startsWith("deploy/k8s/"),
  );
  t.deepEqual(
    expected.map(([file]) => file).sort(),
    [
      ...COMMITTED,
      "deploy/compose.yaml",
      "deploy/prometheus/prometheus.yml",
      "deploy/prometheus/kubernetes.yml",
    ].sort(),
  );
  for (const [file, text] of expected) {
    const committed = await readFile(path.join(repoRoot, file), "utf8");
    t.true(committed === text, `${file} drifted: run npm run deploy:config`);
  }
});

interface RouteJson {
  name: string;
  match: { path?: string; prefix?: string; headers?: { name: string }[]; grpc?: object };
  request_headers_to_add?: { header: { key: string; value: string } }[];
  route?: {
    cluster: string;
    timeout?: string;
    retry_policy?: { retry_on: string };
    max_stream_duration?: { max_stream_duration?: string; grpc_timeout_header_max?: string };
  };
}

/** The routes of a parsed config and the transcoder's service list. */
function inspect(config: unknown) {
  // biome-ignore lint/suspicious/noExplicitAny: walking a parsed YAML document
  const hcm = (config as any).static_resources.listeners[0].filter_chains[0].filters[0]
    .typed_config;
  const routes = hcm.route_config.virtual_hosts[0].routes as RouteJson[];
  const filters = (
    hcm.http_filters as { name: string; typed_config: Record<string, unknown> }[]
  ).map((filter) => filter);
  return { routes, filters };
}

/** The route Envoy picks for a gRPC call: the first whose path or prefix matches. */
function routeFor(routes: RouteJson[], grpcPath: string): RouteJson | undefined {
  return routes.find(
    (route) =>
      !route.match.headers &&
      (route.match.path === grpcPath ||
        (route.match.prefix !== undefined && grpcPath.startsWith(route.match.prefix))),
  );
}

test("Envoy routes the proto services of every public registered service, to its cluster", (t) => {
  t.deepEqual(
    services.map((service) => `${service.cluster}:${service.fullName}`),
    [
      "order:shop.order.v1.OrderService",
      "product:shop.product.v1.ProductService",
      "user:shop.user.v1.UserService",
    ],
  );
});

for (const file of COMMITTED) {
  test(`${file} routes every RPC of the descriptor set to its cluster`, async (t) => {
    const { routes, filters } = inspect(parse(await readFile(path.join(repoRoot, file), "utf8")));

    for (const service of services) {
      const prefix = routes.find((route) => route.match.prefix === `/${service.fullName}/`);
      t.is(prefix?.route?.cluster, service.cluster, `${service.fullName} has no prefix route`);
      t.is(prefix?.route?.retry_policy, undefined, "the per-service default is not retried");

      for (const method of service.methods) {
        const route = routeFor(routes, method.path);
        t.is(route?.route?.cluster, service.cluster, `${method.path} goes to ${service.cluster}`);
        // As its idempotency_level allows: after the call reached a replica (a reset) only when
        // a repeat is harmless; when it cannot have had an effect, always.
        const conditions = route?.route?.retry_policy?.retry_on?.split(",") ?? [];
        t.is(route?.route?.retry_policy?.retry_on, retryOn(method), method.path);
        t.is(conditions.includes("reset"), retriable(method), method.path);
        for (const condition of ["connect-failure", "refused-stream", "unavailable"]) {
          t.true(conditions.includes(condition), `${method.path} retries on ${condition}`);
        }
        if (method.kind !== "unary") {
          t.is(route?.route?.timeout, "0s", `${method.path} streams without a timeout`);
          // The service, not Envoy, ends a stream at the caller's deadline.
          t.is(route?.route?.max_stream_duration, undefined, `${method.path} has no stream timer`);
        } else {
          // Without a deadline: the service gets 14 s, and Envoy cuts the call at 15 s.
          t.is(route?.route?.timeout, "0s", method.path);
          t.is(route?.route?.max_stream_duration?.max_stream_duration, "15s", method.path);
          t.deepEqual(
            route?.request_headers_to_add?.map(({ header }) => [header.key, header.value]),
            [["grpc-timeout", "14S"]],
            method.path,
          );
          // With one, gRPC's or Connect's, Envoy keeps no timer: the service ends the call, with
          // its status, where Envoy's timer could only reset a reply under way.
          const timed = routes.filter(
            (other) => other.match.path === method.path && other.match.headers,
          );
          t.deepEqual(
            timed.map((other) => other.match.headers?.map((header) => header.name)),
            [["grpc-timeout"], ["connect-timeout-ms"]],
            method.path,
          );
          for (const other of timed) {
            t.is(other.route?.timeout, "0s", other.name);
            t.is(other.route?.max_stream_duration, undefined, other.name);
            t.is(other.route?.retry_policy?.retry_on, retryOn(method), other.name);
            t.is(other.request_headers_to_add, undefined, other.name);
          }
        }
      }
    }

    // Health and reflection work through Envoy (grpcurl list, probes).
    for (const infra of [
      "/grpc.health.v1.Health/Check",
      "/grpc.health.v1.Health/Watch",
      "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
      "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo",
    ]) {
      t.is(routeFor(routes, infra)?.route?.cluster, "user", infra);
    }

    t.deepEqual(
      filters.map((filter) => filter.name),
      [
        // edgeProtocols: the caller's protocol, REST bodies against the contract.
        "envoy.filters.http.lua",
        "envoy.filters.http.grpc_web",
        "envoy.filters.http.connect_grpc_bridge",
        "envoy.filters.http.grpc_json_transcoder",
        // healthByName: health by service name, each call's gRPC status.
        "envoy.filters.http.lua",
        "envoy.filters.http.cors",
        "envoy.filters.http.grpc_stats",
        ...(file.includes("compose") ? ["shopmesh.address_rate_limit"] : []),
        "envoy.filters.http.jwt_authn",
        // A deployment limits each caller by the token's subject; the local mesh does not.
        ...(file.includes("compose") ? ["envoy.filters.http.local_ratelimit"] : []),
        "envoy.filters.http.rbac",
        "envoy.filters.http.router",
      ],
    );
    // The internal API has no route: a call falls through to UNIMPLEMENTED.
    for (const method of contractMethods("shop.product.v1.InventoryService")) {
      t.is(routeFor(routes, method.path)?.name, "grpc-not-found", method.path);
    }
    // Every routed rpc's token requirement follows its access rule: optional on the open reads.
    const named = (name: string) => filters.find((filter) => filter.name === name)?.typed_config;
    const jwt = named("envoy.filters.http.jwt_authn") as {
      rules: {
        match: { path?: string; prefix?: string };
        requires?: { provider_name?: string; requires_any?: object };
      }[];
    };
    // First, a CORS preflight, which carries no token: no requirement.
    const [preflight, ...perRpc] = jwt.rules;
    t.like(preflight, { match: { prefix: "/" }, requires: undefined });
    const open = perRpc
      .filter((rule) => rule.requires?.requires_any)
      .map((rule) => rule.match.path);
    t.deepEqual(open.sort(), [
      "/shop.product.v1.ProductService/GetProduct",
      "/shop.product.v1.ProductService/ListProducts",
    ]);
    t.is(perRpc.length, services.flatMap((service) => service.methods).length);
    const transcoder = named("envoy.filters.http.grpc_json_transcoder") as {
      services: string[];
      proto_descriptor: string;
    };
    t.deepEqual(
      transcoder.services,
      services.map((service) => service.fullName),
    );
  });
}

test("envoyConfig refuses a topology that does not match the registry", (t) => {
  const topology = composeTopology();
  const { order: _order, ...withoutOrder } = topology.services;
  t.throws(() => envoyConfig({ ...topology, services: withoutOrder }, services), {
    message: /no "order" entry for shop\.order\.v1\.OrderService/,
  });
  t.throws(
    () => envoyConfig({ ...topology, services: { ...topology.services, cart: [] } }, services),
    { message: /topology\.services\.cart is not a public registered service/ },
  );
});

test("the edge bounds what its clients can make Envoy hold, within its container's memory", (t) => {
  // biome-ignore lint/suspicious/noExplicitAny: walking a generated document
  const config = envoyConfig(composeTopology(), services) as any;
  const chain = config.static_resources.listeners[0].filter_chains[0];
  const hcm = chain.filters[0].typed_config;
  t.like(hcm.http2_protocol_options, {
    max_concurrent_streams: 100,
    initial_stream_window_size: 65_536,
    initial_connection_window_size: 1_048_576,
  });
  t.is(hcm.request_headers_timeout, "10s");
  t.is(chain.transport_socket_connect_timeout, "10s");
  const overload = config.overload_manager;
  const heap = overload.resource_monitors.find(
    (monitor: { name: string }) => monitor.name === "envoy.resource_monitors.fixed_heap",
  );
  t.is(heap.typed_config.max_heap_size_bytes, ENVOY_HEAP_MIB * 1024 * 1024);
  t.true(ENVOY_HEAP_MIB < ENVOY_MEMORY_LIMIT_MIB, "the heap budget leaves room for the binary");
  t.deepEqual(
    overload.actions.map((action: { name: string }) => action.name),
    [
      "envoy.overload_actions.reset_high_memory_stream",
      "envoy.overload_actions.reduce_timeouts",
      "envoy.overload_actions.shrink_heap",
      "envoy.overload_actions.stop_accepting_requests",
    ],
  );
});

test("Envoy accepts the committed local config (run from the repo root)", async (t) => {
  const { ok, output } = await validateEnvoy(path.join(repoRoot, "deploy/envoy/envoy.yaml"));
  t.true(ok, output);
});

test("Envoy accepts the committed compose config", async (t) => {
  const text = await readFile(path.join(repoRoot, "deploy/envoy/envoy.compose.yaml"), "utf8");
  t.is(
    text.split("proto_descriptor: /app/gen/descriptor/shop.binpb").length,
    2,
    "the compose config loads the descriptor from /app",
  );
  // Validation opens the files compose mounts: the repo's descriptor set and the development
  // credentials stand in for them.
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-envoy-compose-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "envoy.compose.yaml");
  await writeFile(file, withLocalPaths(text, composeTopology(), CERTS));
  const { ok, output } = await validateEnvoy(file);
  t.true(ok, output);
});

test("deploy:validate refuses a google.api.http template the transcoder cannot route", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-envoy-template-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await cp(path.join(repoRoot, "proto"), path.join(dir, "proto"), { recursive: true });
  await cp(path.join(repoRoot, "buf.yaml"), path.join(dir, "buf.yaml"));
  await symlink(path.join(repoRoot, "node_modules"), path.join(dir, "node_modules"));
  const proto = path.join(dir, "proto/shop/product/v1/product.proto");
  const text = await readFile(proto, "utf8");
  const valid = 'get: "/products/{product_id}"';
  t.true(text.includes(valid));
  // buf accepts it; Envoy's path matcher cannot register it.
  await writeFile(proto, text.replace(valid, 'get: "/products/{product_id=**}/x/{"'));
  const descriptor = path.join(dir, "shop.binpb");
  const built = await exec(
    path.join(repoRoot, "node_modules/.bin/buf"),
    ["build", "-o", descriptor],
    {
      cwd: dir,
    },
  );
  t.is(built.code, 0, built.stderr);
  const refused = await exec("npx", [
    "tsx",
    "scripts/validate-envoy.ts",
    "--descriptor",
    descriptor,
  ]);
  t.is(refused.code, 1, refused.stdout + refused.stderr);
  t.regex(refused.stderr, /envoy\.yaml: Envoy refuses it[\s\S]*GetProduct/);
  const accepted = await exec("npx", ["tsx", "scripts/validate-envoy.ts"]);
  t.is(accepted.code, 0, accepted.stdout + accepted.stderr);
  t.is(accepted.stdout.match(/Envoy accepts it/g)?.length, 3, accepted.stdout);
});

test("Envoy accepts a generated config for ephemeral ports and a file access log", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-envoy-port0-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const topology: EnvoyTopology = {
    listen: { address: "127.0.0.1", port: 0 },
    admin: { address: "127.0.0.1", port: 0 },
    descriptorPath: DEFAULT_DESCRIPTOR_FILE,
    services: {
      user: [{ host: "127.0.0.1", port: 40001 }],
      product: [{ host: "localhost", port: 40002 }],
      order: [],
    },
    accessLogPath: path.join(dir, "access.log"),
    healthCheckIntervalMs: 250,
    ...edgeCredentials(CERTS),
    corsOrigins: ["https://shop.example"],
  };
  const file = path.join(dir, "envoy.yaml");
  await writeFile(file, envoyYaml(topology));
  const { ok, output } = await validateEnvoy(file);
  t.true(ok, output);
});

const SHOP_SERVICES = services.map((service) => service.fullName);

/** A grpc-js server on port 0 that serves only grpc.health.v1, like a shop service would. */
async function healthServer(t: import("ava").ExecutionContext) {
  const server = new grpc.Server();
  const health = new HealthImplementation(
    Object.fromEntries(SHOP_SERVICES.map((name) => [name, "SERVING" as const])),
  );
  health.addToServer(server);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (error, bound) =>
      error ? reject(error) : resolve(bound),
    );
  });
  t.teardown(() => server.forceShutdown());
  return { port, health, address: `127.0.0.1:${port}` };
}

/** One grpc.health.v1 Check of the user service, sent through Envoy's listener. */
function checkUser(client: grpc.Client): Promise<{ status: string }> {
  const check = healthService.Check;
  if (!check) throw new Error("grpc-health-check has no Check method");
  return new Promise((resolve, reject) => {
    client.makeUnaryRequest(
      check.path,
      check.requestSerialize,
      check.responseDeserialize as (bytes: Buffer) => { status: string },
      { service: "shop.user.v1.UserService" },
      { deadline: Date.now() + 5_000 },
      (error, value) => (error || !value ? reject(error) : resolve(value)),
    );
  });
}

test("startEnvoy health-checks grpc-js servers and proxies gRPC to them", async (t) => {
  const [a, b] = [await healthServer(t), await healthServer(t)];
  // b says the user service is down: Envoy must check the full service name, not the server.
  b.health.setStatus("shop.user.v1.UserService", "NOT_SERVING");
  const endpoints = [a, b].map(({ port }) => ({ host: "127.0.0.1", port }));
  const envoy = await startEnvoy({
    services: { user: endpoints, product: endpoints, order: [{ host: "127.0.0.1", port: a.port }] },
    waitHealthy: ["product", "order"],
  });
  t.teardown(() => envoy.stop());

  const stats = await envoy.stats();
  t.deepEqual(Object.keys(stats).sort(), ["order", "product", "user"]);
  t.true(stats.product?.[a.address]?.healthy && stats.product?.[b.address]?.healthy);
  await envoy.waitHealthy(["user"], 1_000).then(
    () => t.fail("a NOT_SERVING replica passed the user service's health check"),
    () => t.pass(),
  );
  const user = (await envoy.stats()).user;
  t.true(user?.[a.address]?.healthy);
  t.deepEqual(user?.[b.address]?.healthFlags, ["failed_active_health_check"]);

  b.health.setStatus("shop.user.v1.UserService", "SERVING");
  await envoy.waitHealthy(["user"], 10_000);

  // A raw health check through Envoy's listener lands on the user cluster.
  const client = new grpc.Client(envoy.address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const calls = 6;
  for (let i = 0; i < calls; i++) t.is((await checkUser(client)).status, "SERVING");

  // Host counters count proxied calls only, not Envoy's own health checks.
  const after = (await envoy.stats()).user ?? {};
  const proxied = Object.values(after).reduce((sum, host) => sum + host.rq_total, 0);
  t.is(proxied, calls);
  t.is(
    Object.values(after).reduce((sum, host) => sum + host.rq_success, 0),
    calls,
  );

  // One JSON access log line per call, with the gRPC status and the replica that served it.
  const lines = await eventually(`${calls} access log lines`, () => {
    const written = envoy.accessLog();
    return written.length >= calls ? written : undefined;
  });
  t.is(lines.length, calls);
  for (const line of lines) {
    t.like(line, {
      path: "/grpc.health.v1.Health/Check",
      protocol: "HTTP/2",
      response_code: 200,
      grpc_status: 0,
      upstream_cluster: "user",
      response_flags: "-",
    });
    t.true([a.address, b.address].includes(String(line.upstream_host)));
    t.regex(String(line.x_request_id), /^[0-9a-f-]{36}$/);
  }
});

test("Envoy's balancing follows a replica's health as soon as the admin shows it", async (t) => {
  const [a, b] = [await healthServer(t), await healthServer(t)];
  const endpoints = [a, b].map(({ port }) => ({ host: "127.0.0.1", port }));
  const envoy = await startEnvoy({ services: { user: endpoints, product: [], order: [] } });
  t.teardown(() => envoy.stop());
  const client = new grpc.Client(envoy.address, grpc.credentials.createInsecure());
  t.teardown(() => client.close());
  const isHealthy = async (address: string) => (await envoy.stats()).user?.[address]?.healthy;
  // How many of a burst of 20 checks b served. Least-request balancing spreads a burst over the
  // replicas in rotation: each call goes to the one with fewer in flight.
  const burstOnB = async () => {
    const before = (await envoy.stats()).user?.[b.address]?.rq_total ?? 0;
    await Promise.all(Array.from({ length: 20 }, () => checkUser(client)));
    return ((await envoy.stats()).user?.[b.address]?.rq_total ?? 0) - before;
  };

  // b leaves and comes back half a second later (the checks' interval here), as a replica that
  // lost its database for a moment. Envoy's workers must see each change when its admin does:
  // by default they would hear of a change that follows another within a second up to a second
  // late (the cluster's update merge window).
  b.health.setStatus("shop.user.v1.UserService", "NOT_SERVING");
  await until("Envoy to take b out", async () => (await isHealthy(b.address)) === false, {
    intervalMs: 10,
  });
  t.is(await burstOnB(), 0, "b got calls after Envoy's admin showed it out");
  b.health.setStatus("shop.user.v1.UserService", "SERVING");
  await until("Envoy to let b back in", async () => (await isHealthy(b.address)) === true, {
    intervalMs: 10,
  });
  t.true((await burstOnB()) > 0, "none of 20 calls reached b, back in at Envoy's admin");
});
