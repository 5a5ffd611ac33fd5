// Reservation expiry is per reservation: one product whose restock cannot fit never stops the
// others, and a stock that would leave outstanding units unrestorable is refused up front.
import test from "ava";
import { UpdateProductRequest } from "../../gen/ts/shop/product/v1/product.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct } from "../../scripts/lib/seed.js";
import { until } from "../helpers/eventually.js";
import { orderLine, startFleet } from "../helpers/fleet.js";

const MAX_STOCK = 1_000_000_000;

test("UpdateProduct refuses a stock that leaves reserved units no room to come back", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 10 });
  await fleet.inventory.reserveStock({
    reservationId: "held-5",
    lines: [orderLine(mug.productId, 5)],
    ttl: { seconds: "60", nanos: 0 },
  });
  await fleet.inventory.reserveStock({
    reservationId: "sold-2",
    lines: [orderLine(mug.productId, 2)],
    ttl: { seconds: "60", nanos: 0 },
  });
  await fleet.inventory.commitReservation({ reservationId: "sold-2" });
  const setStock = (stockQuantity: number) =>
    fleet.products.updateProduct(
      UpdateProductRequest.fromPartial({
        product: { productId: mug.productId, stockQuantity },
        updateMask: ["stock_quantity"],
      }),
    );

  const error = await t.throwsAsync(setStock(MAX_STOCK), { instanceOf: ServiceError });
  t.is(Code[error?.code ?? -1], "FAILED_PRECONDITION", error?.message);
  t.is(error?.details.reason, "STOCK_LIMIT_EXCEEDED");
  t.is(error?.details.preconditionViolations?.[0]?.subject, mug.productId);
  t.is((await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity, 3);

  // Held and committed units both count: either may come back.
  const { product } = await setStock(MAX_STOCK - 7);
  t.is(product?.stockQuantity, MAX_STOCK - 7);
  await fleet.inventory.releaseReservation({ reservationId: "held-5" });
  await fleet.inventory.releaseReservation({ reservationId: "sold-2" });
  t.is(
    (await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity,
    MAX_STOCK,
  );
});

test("a reservation whose restock cannot fit does not stop other reservations expiring", async (t) => {
  const fleet = await startFleet(t, { product: { sweepMs: 100 } });
  const full = await addProduct(fleet.products, { stock: 10 });
  const other = await addProduct(fleet.products, { stock: 10 });
  const reserve = (reservationId: string, productId: string, quantity: number, ttlS = 1) =>
    fleet.inventory.reserveStock({
      reservationId,
      lines: [orderLine(productId, quantity)],
      ttl: { seconds: String(ttlS), nanos: 0 },
    });
  await reserve("stuck", full.productId, 5, 3_600);
  // Data as an older version could leave it: the held units no longer fit under the bound. Only
  // then is the reservation due, so that no sweep can give its units back first.
  await fleet.product
    .db("products")
    .where({ product_id: full.productId })
    .update({ stock_quantity: MAX_STOCK });
  await fleet.product
    .db("reservations")
    .where({ reservation_id: "stuck" })
    .update({ expire_time: 0 });
  await reserve("fine", other.productId, 3);

  const stock = async (productId: string) =>
    (await fleet.products.getProduct({ productId })).product?.stockQuantity;
  await until("the other product's reservation to expire", async () => {
    return (await stock(other.productId)) === 10;
  });
  const expired = await t.throwsAsync(
    fleet.inventory.commitReservation({ reservationId: "fine" }),
    {
      instanceOf: ServiceError,
    },
  );
  t.is(Code[expired?.code ?? -1], "FAILED_PRECONDITION");
  t.is(expired?.details.reason, "RESERVATION_NOT_HELD");

  // The stuck one is never INTERNAL to a caller.
  for (const call of [
    () => fleet.inventory.commitReservation({ reservationId: "stuck" }),
    () => fleet.inventory.releaseReservation({ reservationId: "stuck" }),
  ]) {
    const error = await t.throwsAsync(call(), { instanceOf: ServiceError });
    t.is(Code[error?.code ?? -1], "FAILED_PRECONDITION", error?.message);
  }
  t.is(await stock(full.productId), MAX_STOCK);
});
