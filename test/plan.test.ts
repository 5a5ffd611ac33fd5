// What `npm run mesh` runs, as its variables say; a mistake in one stops it before anything starts.
import test from "ava";
import { meshPlan } from "../scripts/lib/plan.js";

test("SHOP_MESH_REPLICAS sets the replicas of every service, each 10 ports above the last", (t) => {
  const plan = meshPlan({ SHOP_MESH_REPLICAS: "3", SHOP_DATA_DIR: "/tmp/plan-test" });
  t.deepEqual(plan.addresses.user, ["127.0.0.1:50051", "127.0.0.1:50061", "127.0.0.1:50071"]);
  t.is(plan.replicas.length, 9);
});

test("a replica count that is not a whole number of at least 1, or runs out of ports, is refused", (t) => {
  for (const replicas of ["0", "-1", "1.5", "two", "0x2"]) {
    t.throws(() => meshPlan({ SHOP_MESH_REPLICAS: replicas }), {
      message: `SHOP_MESH_REPLICAS must be a whole number of at least 1, got "${replicas}"`,
    });
  }
  t.throws(() => meshPlan({ SHOP_MESH_REPLICAS: "2000" }), { message: /run past port 65535/ });
});

test("SHOP_EDGE_RATE_LIMIT limits each caller at the mesh's Envoy; unset, no limit", (t) => {
  t.deepEqual(meshPlan({ SHOP_EDGE_RATE_LIMIT: "50" }).envoy?.topology.rateLimit, {
    calls: 50,
    seconds: 1,
  });
  t.is(meshPlan({}).envoy?.topology.rateLimit, undefined);
  for (const calls of ["0", "-5", "1.5", "lots"]) {
    t.throws(() => meshPlan({ SHOP_EDGE_RATE_LIMIT: calls }), {
      message: `SHOP_EDGE_RATE_LIMIT must be a whole number of at least 1, got "${calls}"`,
    });
  }
});
