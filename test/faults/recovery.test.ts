// After the user or product process restarts, the order service serves CreateOrder again within
// 0.5 s of that process reporting SERVING: its channels retry the connection quickly, and its
// calls wait for the channel to be ready within their deadline instead of failing at once.
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import type { ServiceError } from "../../kit/errors.js";
import { checkServing } from "../../scripts/lib/launcher.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startProcessFleet } from "../helpers/fleet.js";

const BOUND_MS = 500;

for (const dependency of ["user", "product"] as const satisfies ServiceName[]) {
  test(`CreateOrder succeeds within ${BOUND_MS} ms of a restarted ${dependency} process reporting SERVING`, async (t) => {
    const fleet = await startProcessFleet(t);
    const [protoService] = registry.get(dependency).protoServices as [string];
    const shopper = await addUser(fleet.users);
    const mug = await addProduct(fleet.products, { stock: 1_000 });
    let n = 0;
    const order = () =>
      fleet.orders.createOrder(
        {
          userId: shopper.userId,
          lines: [orderLine(mug.productId, 1)],
          requestId: `recover-${dependency}-${n++}`,
        },
        { timeoutMs: 2_000 },
      );
    t.is((await order()).order?.state, OrderState.ORDER_STATE_CONFIRMED);

    const gaps: number[] = [];
    for (let round = 0; round < 2; round++) {
      await fleet.kill(dependency);
      // Down long enough for the order service's channel to back off to its longest wait.
      await Promise.all([order(), order()].map((call) => call.catch(() => {})));
      await sleep(1_000);
      const restarting = fleet.restart(dependency);
      // SERVING as a client outside sees it first: poll health every 10 ms.
      await until(
        `${dependency} to report SERVING`,
        () => checkServing(fleet.address(dependency), protoService, 200),
        { intervalMs: 10, timeoutMs: 30_000 },
      );
      const serving = performance.now();
      let failures = 0;
      for (;;) {
        try {
          await order();
          break;
        } catch (error) {
          failures++;
          t.log(`round ${round}: ${(error as ServiceError).message}`);
          await sleep(10);
        }
      }
      gaps.push(Math.round(performance.now() - serving));
      t.log(`round ${round}: OK ${gaps.at(-1)} ms after SERVING, ${failures} failed before`);
      await restarting;
    }
    for (const gap of gaps) t.true(gap <= BOUND_MS, `${gap} ms`);
  });
}
