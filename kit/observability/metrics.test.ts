// The metrics port: a scrape that fails is a bare 500, and why goes to the service's log only.
import test from "ava";
import { Metrics, serveMetrics } from "./metrics.js";

test("a failed scrape answers 500 without the error's text, which goes to onError", async (t) => {
  const metrics = new Metrics();
  const secret = "connect ECONNREFUSED db.internal:5432 for user shop_owner";
  metrics.gauge({
    name: "shop_test_rows",
    help: "A gauge whose read of the store fails.",
    collect() {
      throw new Error(secret);
    },
  });
  const failures: unknown[] = [];
  const endpoint = await serveMetrics(metrics, "127.0.0.1", 0, (error) => failures.push(error));
  t.teardown(() => endpoint.close());
  const response = await fetch(`http://127.0.0.1:${endpoint.port}/metrics`);
  t.is(response.status, 500);
  const body = await response.text();
  t.false(body.includes("db.internal") || body.includes("shop_owner"), body);
  t.is(failures.length, 1);
  t.regex(String(failures[0]), /db\.internal/);
});
