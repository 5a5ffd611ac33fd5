// How Envoy stops in Kubernetes: its preStop hook (deploy/kubernetes/envoy.ts ENVOY_PRESTOP), run
// by bash as the kubelet runs it, against a real Envoy in front of a real product service. The
// kubelet sends SIGTERM when the hook returns, and Envoy exits at once on it, cutting every call
// still open: so the hook must not return while a call is in flight, and must return at last.
import { spawn } from "node:child_process";
import { once } from "node:events";
import test, { type ExecutionContext } from "ava";
import { ENVOY_PRESTOP } from "../../deploy/kubernetes/envoy.js";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { createClient } from "../../kit/client/index.js";
import type { ServerMiddleware } from "../../kit/middleware/index.js";
import { addProduct } from "../../scripts/lib/seed.js";
import { createProductService } from "../../services/product/service.js";
import { testCallers } from "../helpers/credentials.js";
import { startEnvoy } from "../helpers/envoy.js";
import { until } from "../helpers/eventually.js";
import { clientsFor, start } from "../helpers/fleet.js";

/** Seconds the test's Envoy drains its listeners, as --drain-time-s and the hook's sleep. */
const DRAIN_S = 1;

/** Envoy in front of a product service whose GetProduct waits in its handler until `release()`. */
async function heldGetProduct(t: ExecutionContext) {
  let release = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  t.teardown(() => release());
  let held = 0;
  const hold: ServerMiddleware = {
    name: "hold-get-product",
    wrap: (method, next) =>
      method.rpc !== "GetProduct"
        ? next
        : async (request, ctx) => {
            held++;
            await released;
            return next(request, ctx);
          },
  };
  const product = await start(t, createProductService(), { middleware: [hold] });
  const mug = await addProduct(clientsFor(t, { product: product.server.address }).products, {
    name: "mug",
  });
  const envoy = await startEnvoy({
    services: { product: [{ host: "127.0.0.1", port: product.server.port }] },
    waitHealthy: ["product"],
    drainTimeS: DRAIN_S,
  });
  t.teardown(() => envoy.stop());
  const viaEnvoy = createClient(ProductServiceService, envoy.address, {
    middleware: testCallers(),
  });
  t.teardown(() => viaEnvoy.close());
  const call = viaEnvoy.getProduct({ productId: mug.productId }, { timeoutMs: 60_000 });
  call.catch(() => {});
  await until("the GetProduct is in its handler", () => held === 1);
  return { envoy, call, release, mug };
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
