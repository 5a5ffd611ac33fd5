// A shutdown waits for the calls in flight up to SHOP_SHUTDOWN_GRACE_MS, then closes what is left:
// a stream that never ends by itself (Health/Watch here, WatchOrder in the mesh) must not hold a
// rolling restart until the orchestrator kills the process.
import test from "ava";
import { HealthCheckResponse_ServingStatus, HealthService } from "../gen/ts/health/v1/health.js";
import { createClient } from "../kit/client.js";
import { Code, ServiceError } from "../kit/errors.js";
import { startService } from "../kit/runtime.js";
import { createProductService } from "../services/product/service.js";
import { until } from "./helpers/eventually.js";

test("a stream still open when the grace period ends is closed, and the shutdown completes", async (t) => {
  const product = await startService(createProductService(), {
    host: "127.0.0.1",
    port: 0,
    database: ":memory:",
    logLevel: "silent",
    shutdownGraceMs: 300,
  });
  t.teardown(() => product.stop());
  const health = createClient(HealthService, product.server.address);
  t.teardown(() => health.close());

  const statuses: HealthCheckResponse_ServingStatus[] = [];
  // Watches past NOT_SERVING, as a client that only cares about the stream's end would.
  const watch = (async () => {
    for await (const update of health.watch({ service: "" }, { timeoutMs: 60_000 })) {
      statuses.push(update.status);
    }
  })();
  await until("the watch to report SERVING", () => statuses.length > 0);

  const stopped = product.server.shutdown().then(() => "stopped" as const);
  const hung = new Promise<"still running">((resolve) =>
    setTimeout(resolve, 15_000, "still running").unref(),
  );
  t.is(await Promise.race([stopped, hung]), "stopped");

  const ended = await t.throwsAsync(watch, { instanceOf: ServiceError });
  t.log(ended && Code[ended.code], ended?.message);
  t.true(
    ended?.code === Code.UNAVAILABLE || ended?.code === Code.CANCELLED,
    `the watch ended ${ended && Code[ended.code]}: ${ended?.message}`,
  );
  t.deepEqual(statuses, [
    HealthCheckResponse_ServingStatus.SERVING,
    HealthCheckResponse_ServingStatus.NOT_SERVING,
  ]);
});
