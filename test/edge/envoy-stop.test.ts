// How a deployed Envoy stops (deploy/envoy/stop.ts), against a real Envoy in front of a real
// product service. Envoy exits at once on SIGTERM, cutting every call still open. In Kubernetes
// the kubelet sends it when the preStop hook returns (ENVOY_PRESTOP, run here by bash as the
// kubelet runs it), so the hook must not return while a call is in flight, and must return at
// last; in compose, Envoy runs under a bash that drains it on SIGTERM first (drainingEnvoy).
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { drainingEnvoy } from "../../deploy/envoy/stop.js";
import { ENVOY_PRESTOP } from "../../deploy/kubernetes/envoy.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { createClient } from "../../kit/client/index.js";
import { envoyBinary, frontDoorConfig, waitEnvoyReady } from "../../scripts/lib/envoy.js";
import { freePorts } from "../../scripts/lib/ports.js";
import { addProduct } from "../../scripts/lib/seed.js";
import { createProductService } from "../../services/product/service.js";
import { testCallers } from "../helpers/credentials.js";
import { startEnvoy } from "../helpers/envoy.js";
import { until } from "../helpers/eventually.js";
import { clientsFor, start } from "../helpers/fleet.js";
import { rpcGate } from "../helpers/gate.js";

/** Seconds the test's Envoy drains its listeners, as --drain-time-s and the hook's sleep. */
const DRAIN_S = 1;

/** A product service whose GetProduct waits in its handler until `release()`. */
async function heldProduct(t: ExecutionContext) {
  const gate = rpcGate(t, "GetProduct");
  const product = await start(t, createProductService(), { middleware: [gate.middleware] });
  const mug = await addProduct(clientsFor(t, { product: product.server.address }).products, {
    name: "mug",
  });
  /** A GetProduct through the Envoy at `address`, once it is in the handler. */
  const getProduct = async (address: string) => {
    const viaEnvoy = createClient(ProductServiceService, address, { middleware: testCallers() });
    t.teardown(() => viaEnvoy.close());
    const call = viaEnvoy.getProduct({ productId: mug.productId }, { timeoutMs: 60_000 });
    call.catch(() => {});
    await until("the GetProduct is held", () => gate.waiting() === 1);
    return { call };
  };
  return { port: product.server.port, getProduct, release: gate.open, mug };
}

/** Envoy in front of a product service whose GetProduct is in its handler until `release()`. */
async function heldGetProduct(t: ExecutionContext) {
  const product = await heldProduct(t);
  const envoy = await startEnvoy({
    services: { product: [{ host: "127.0.0.1", port: product.port }] },
    waitHealthy: ["product"],
    drainTimeS: DRAIN_S,
  });
  t.teardown(() => envoy.stop());
  return { ...product, envoy, ...(await product.getProduct(envoy.address)) };
}

/** Runs the hook against `adminPort` as the kubelet would; resolves with its exit code. */
function preStop(t: ExecutionContext, adminPort: number, callsS: number) {
  const hook = spawn("bash", ["-c", ENVOY_PRESTOP], {
    env: {
      ...process.env,
      ENVOY_PRESTOP_ADMIN: String(adminPort),
      ENVOY_PRESTOP_DRAIN_S: String(DRAIN_S),
      ENVOY_PRESTOP_CALLS_S: String(callsS),
    },
    stdio: "ignore",
  });
  t.teardown(() => hook.kill("SIGKILL"));
  return once(hook, "exit").then(([code]) => code as number | null);
}

test("a call in flight when Envoy is told to stop is answered before the hook lets SIGTERM come", async (t) => {
  const { envoy, call, release, mug } = await heldGetProduct(t);
  let returned = false;
  const hook = preStop(t, envoy.adminPort, 60).then((code) => {
    returned = true;
    // The kubelet's SIGTERM, the moment the hook returns.
    return envoy.stop().then(() => code);
  });
  // Past the drain, whose listeners are closed by now: the call is the only thing left.
  await new Promise((resolve) => setTimeout(resolve, (DRAIN_S + 2) * 1000));
  t.false(returned, "the hook returned while a call was in flight");
  release();
  const { product } = await call;
  t.is(product?.productId, mug.productId);
  t.is(await hook, 0);
});

test("a call still open when the hook's wait is over is left to SIGTERM: the hook returns", async (t) => {
  const { envoy, call } = await heldGetProduct(t);
  t.is(await preStop(t, envoy.adminPort, 1), 0);
  await envoy.stop();
  await t.throwsAsync(call);
});

/** Whether `child` has exited. */
const exited = (child: ChildProcess) => child.exitCode !== null || child.signalCode !== null;

test("compose's Envoy, told to stop, answers the call in flight, then stops", async (t) => {
  const { port: productPort, getProduct, release, mug } = await heldProduct(t);
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-envoy-stop-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const [port, adminPort] = (await freePorts(2)) as [number, number];
  const config = frontDoorConfig({
    services: { product: [{ host: "127.0.0.1", port: productPort }] },
    healthCheckIntervalMs: 500,
  }) as {
    admin: { address: { socket_address: { port_value: number } } };
    static_resources: { listeners: { address: { socket_address: { port_value: number } } }[] };
  };
  config.admin.address.socket_address.port_value = adminPort;
  (
    config.static_resources.listeners[0] as (typeof config.static_resources.listeners)[0]
  ).address.socket_address.port_value = port;
  const file = path.join(dir, "envoy.json");
  await writeFile(file, JSON.stringify(config));
  const args = ["-c", file, "--disable-hot-restart", "--log-level", "warn", "--concurrency", "1"];
  // Its own process group: the teardown stops the bash and the Envoy under it alike.
  const wrapper = spawn("bash", ["-c", drainingEnvoy(args, DRAIN_S)], {
    env: {
      ...process.env,
      PATH: `${path.dirname(envoyBinary())}:${process.env.PATH}`,
      ENVOY_PRESTOP_ADMIN: String(adminPort),
      ENVOY_PRESTOP_CALLS_S: "60",
    },
    stdio: "ignore",
    detached: true,
  });
  t.teardown(() => {
    if (!exited(wrapper) && wrapper.pid) process.kill(-wrapper.pid, "SIGKILL");
  });
  const stopped = once(wrapper, "exit");
  await waitEnvoyReady(adminPort, { clusters: ["product"] });
  const { call } = await getProduct(`127.0.0.1:${port}`);
  // What `docker compose stop` sends the container's first process.
  wrapper.kill("SIGTERM");
  await new Promise((resolve) => setTimeout(resolve, (DRAIN_S + 2) * 1000));
  t.false(exited(wrapper), "Envoy stopped while a call was in flight");
  release();
  const { product } = await call;
  t.is(product?.productId, mug.productId);
  const [code] = await stopped;
  t.is(code, 0);
});
