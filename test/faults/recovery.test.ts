// After the user or product process restarts, the order service serves CreateOrder again as soon
// as that process reports SERVING: its channels retry the connection quickly, and its calls wait
// for the channel to be ready within their deadline instead of failing at once. How fast is the
// bench's business; here the first order after SERVING must succeed within its deadline.
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { Code, type ServiceError } from "../../kit/errors.js";
import { checkServing } from "../../scripts/lib/launcher.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startProcessFleet } from "../helpers/fleet.js";

for (const dependency of ["user", "product"] as const satisfies ServiceName[]) {
  test(`the first CreateOrder after a restarted ${dependency} process reports SERVING succeeds`, async (t) => {
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

    for (let round = 0; round < 2; round++) {
      await fleet.kill(dependency);
      // Down long enough for the order service's channel to back off to its longest wait.
      const down = await Promise.allSettled([order(), order()]);
      for (const call of down) {
        t.is(call.status, "rejected", `round ${round}: no order while ${dependency} is down`);
        if (call.status === "rejected") {
          t.true(
            [Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED].includes((call.reason as ServiceError).code),
            `round ${round}: ${(call.reason as Error).message}`,
          );
        }
      }
      await sleep(1_000);
      const restarting = fleet.restart(dependency);
      // SERVING as a client outside sees it first: poll health every 10 ms.
      await until(
        `${dependency} to report SERVING`,
        () => checkServing(fleet.address(dependency), protoService, 200),
        { intervalMs: 10, timeoutMs: 30_000 },
      );
      const after = await order().catch((error: ServiceError) => error);
      t.is(
        "order" in after ? after.order?.state : after.message,
        OrderState.ORDER_STATE_CONFIRMED,
        `round ${round}: the first order after SERVING`,
      );
      await restarting;
    }
  });
}
