// The reconciler of every order replica reads the same unsettled orders from the database they
// share: each order goes to the run that claims it first, so it is settled, counted and released
// once, however many replicas run at the same moment.
import test from "ava";
import type { ReconcileAction, ReconcileResult } from "./saga/index.js";
import { setup, shareDependencies } from "./test-setup.js";

shareDependencies(test);

/** Failed orders whose releases did not get through, as a product outage leaves them. */
const BACKLOG = 150;

test("two replicas reconciling at the same moment settle each failed order once", async (t) => {
  const { db, store, newSaga, seed } = await setup(t);
  const ids: string[] = [];
  for (let i = 0; i < BACKLOG; i++) {
    const { orderId } = await seed(`usr_${i % 7}`);
    t.true(await store.fail(orderId));
    ids.push(orderId);
  }
  const tallies = [new Map<string, number>(), new Map<string, number>()];
  const replicas = tallies.map((tally) =>
    newSaga({
      reconciled(action: ReconcileAction, result: ReconcileResult) {
        const key = `${action}:${result}`;
        tally.set(key, (tally.get(key) ?? 0) + 1);
      },
    }),
  );

  const settled = await Promise.all(replicas.map((replica) => replica.reconcile()));
  t.is(
    settled.reduce((sum, count) => sum + count, 0),
    BACKLOG,
    `settled ${settled.join(" + ")}`,
  );
  t.true(
    settled.every((count) => count > 0),
    "both replicas take part in a backlog",
  );
  const done = tallies.reduce((sum, tally) => sum + (tally.get("release:done") ?? 0), 0);
  t.is(done, BACKLOG);
  t.deepEqual(
    tallies.flatMap((tally) => [...tally.keys()]).filter((key) => key !== "release:done"),
    [],
  );
  t.deepEqual(await store.unsettled(Date.now(), BACKLOG), []);
  // Nothing is left claimed: a later run, on either replica, may take any order again.
  t.deepEqual(await db("orders").whereNotNull("reconcile_until").select("order_id"), []);
});
