// A held reservation's TTL: the stock comes back when it expires; against a product service
// older than commit-on-reserve, orders are committed as before, and one whose hold expired
// first fails and may be sent again.
import test from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import {
  ReservationState,
  type ReserveStockRequest,
} from "../../gen/ts/shop/product/v1/inventory.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startFleet } from "../helpers/fleet.js";
import { stockOf } from "./helpers.js";

test("a held reservation expires after its TTL and gives its stock back", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const { reservation } = await fleet.inventory.reserveStock({
    reservationId: "expiring-1",
    lines: [orderLine(mug.productId, 4)],
    ttl: { seconds: "1", nanos: 0 },
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_HELD);
  t.is(await stockOf(fleet, mug.productId), 1);

  await until("the expired reservation to give its stock back", async () => {
    return (await stockOf(fleet, mug.productId)) === 5;
  });
  const error = await t.throwsAsync(
    fleet.inventory.commitReservation({ reservationId: "expiring-1" }),
    {
      instanceOf: ServiceError,
    },
  );
  t.is(error?.code, Code.FAILED_PRECONDITION);
  t.is(error?.details.reason, "RESERVATION_NOT_HELD");
});

test("against a product service older than commit-on-reserve, orders are committed as before", async (t) => {
  // The TTL leaves a loaded machine time to place the first order on PostgreSQL; at 1 s, one
  // CI run's took longer.
  const fleet = await startFleet(t, { order: { reservationTtlMs: 3_000 } });
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 3 });
  // An older product service does not know ReserveStockRequest.commit: it only holds the stock.
  const older = (request: ReserveStockRequest) => ({ ...request, commit: false });
  fleet.product.faults.set("ReserveStock", { rewrite: older });
  const placed = await fleet.orders.createOrder({
    userId: user.userId,
    lines: [orderLine(mug.productId, 1)],
    requestId: "upgrade-1",
  });
  t.is(placed.order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(placed.order?.total?.amountMinor, "1000");
  const { reservation } = await fleet.inventory.commitReservation({
    reservationId: `order:${placed.order?.orderId}`,
  });
  t.is(reservation?.state, ReservationState.RESERVATION_STATE_COMMITTED);

  // The hold outlives its TTL before the commit: the order fails, keeps no stock, may be resent.
  fleet.product.faults.set("CommitReservation", { delayMs: 3_500 });
  const request = {
    userId: user.userId,
    lines: [orderLine(mug.productId, 2)],
    requestId: "slow",
  };
  const error = await t.throwsAsync(fleet.orders.createOrder(request), {
    instanceOf: ServiceError,
  });
  // The service's slowness, not the caller's mistake: a retryable status that says so.
  t.is(error?.code, Code.ABORTED);
  t.is(error?.details.reason, "RESERVATION_EXPIRED");
  t.is(error?.details.metadata?.request_id, "slow");
  t.is(await stockOf(fleet, mug.productId), 2);

  fleet.product.faults.clear();
  const { order } = await fleet.orders.createOrder(request);
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);
  t.is(await stockOf(fleet, mug.productId), 0);
});
