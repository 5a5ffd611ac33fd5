// A product outage under load fails many orders at once, and each may hold stock until its
// release gets through. Once product is back, the reconciler settles the whole backlog in its
// next run, not one batch of a hundred per interval.
import test from "ava";
import { Code } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { until } from "../helpers/eventually.js";
import { captureLogger, orderLine, startFleet } from "../helpers/fleet.js";

const BACKLOG = 250;

test(`the reconciler settles a backlog of ${BACKLOG} failed orders in one run`, async (t) => {
  const { logger, lines } = captureLogger("order");
  const fleet = await startFleet(t, {
    order: { reconcileMs: 1_000 },
    loggers: { order: logger },
  });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 1_000 });
  fleet.product.faults.set("ReserveStock", { code: Code.INTERNAL });
  fleet.product.faults.set("ReleaseReservation", { code: Code.INTERNAL });
  for (let i = 0; i < BACKLOG; i += 10) {
    await Promise.all(
      Array.from({ length: 10 }, (_, j) =>
        t.throwsAsync(
          fleet.orders.createOrder({
            userId: user.userId,
            lines: [orderLine(mug.productId, 1)],
            requestId: `outage-${i + j}`,
          }),
        ),
      ),
    );
  }
  fleet.product.faults.clear();

  const settled = () => lines.filter((line) => line.msg === "settled unfinished orders");
  await until("the reconciler's first run that settles anything", async () => settled().length > 0);
  t.is(settled()[0]?.count, BACKLOG);
});
