// Reservation expiry is per reservation: one product whose restock cannot fit never stops the
// others, and a stock that would leave outstanding units unrestorable is refused up front.
import test from "ava";
import { UpdateProductRequest } from "../../gen/ts/shop/product/v1/product.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { createProduct, orderLine, startMesh } from "../helpers/mesh.js";

const MAX_STOCK = 1_000_000_000;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

test("UpdateProduct refuses a stock that leaves reserved units no room to come back", async (t) => {
  const mesh = await startMesh(t);
  const mug = await createProduct(mesh.products, { stock: 10 });
  await mesh.products.reserveStock({
    reservationId: "held-5",
    lines: [orderLine(mug.productId, 5)],
    ttl: { seconds: "60", nanos: 0 },
  });
  await mesh.products.reserveStock({
    reservationId: "sold-2",
    lines: [orderLine(mug.productId, 2)],
    ttl: { seconds: "60", nanos: 0 },
  });
  await mesh.products.commitReservation({ reservationId: "sold-2" });
  const setStock = (stockQuantity: number) =>
    mesh.products.updateProduct(
      UpdateProductRequest.fromPartial({
        product: { productId: mug.productId, stockQuantity },
        updateMask: ["stock_quantity"],
      }),
    );

  const error = await t.throwsAsync(setStock(MAX_STOCK), { instanceOf: ServiceError });
  t.is(Code[error?.code ?? -1], "FAILED_PRECONDITION", error?.message);
  t.is(error?.details.reason, "STOCK_LIMIT_EXCEEDED");
  t.is(error?.details.preconditionViolations?.[0]?.subject, mug.productId);
  t.is((await mesh.products.getProduct({ productId: mug.productId })).product?.stockQuantity, 3);

  // Held and committed units both count: either may come back.
  const { product } = await setStock(MAX_STOCK - 7);
  t.is(product?.stockQuantity, MAX_STOCK - 7);
  await mesh.products.releaseReservation({ reservationId: "held-5" });
  await mesh.products.releaseReservation({ reservationId: "sold-2" });
  t.is(
    (await mesh.products.getProduct({ productId: mug.productId })).product?.stockQuantity,
    MAX_STOCK,
  );
});

test("a reservation whose restock cannot fit does not stop other reservations expiring", async (t) => {
  const mesh = await startMesh(t, { product: { sweepMs: 100 } });
  const full = await createProduct(mesh.products, { stock: 10 });
  const other = await createProduct(mesh.products, { stock: 10 });
  const reserve = (reservationId: string, productId: string, quantity: number) =>
    mesh.products.reserveStock({
      reservationId,
      lines: [orderLine(productId, quantity)],
      ttl: { seconds: "1", nanos: 0 },
    });
  await reserve("stuck", full.productId, 5);
  await reserve("fine", other.productId, 3);
  // Data as an older version could leave it: the held units no longer fit under the bound.
  await mesh.product
    .db("products")
    .where({ product_id: full.productId })
    .update({ stock_quantity: MAX_STOCK });

  const stock = async (productId: string) =>
    (await mesh.products.getProduct({ productId })).product?.stockQuantity;
  for (let i = 0; i < 30 && (await stock(other.productId)) !== 10; i++) await sleep(100);
  t.is(await stock(other.productId), 10, "the other product's reservation expired");
  const expired = await t.throwsAsync(mesh.products.commitReservation({ reservationId: "fine" }), {
    instanceOf: ServiceError,
  });
  t.is(Code[expired?.code ?? -1], "FAILED_PRECONDITION");
  t.is(expired?.details.reason, "RESERVATION_NOT_HELD");

  // The stuck one is never INTERNAL to a caller.
  for (const call of [
    () => mesh.products.commitReservation({ reservationId: "stuck" }),
    () => mesh.products.releaseReservation({ reservationId: "stuck" }),
  ]) {
    const error = await t.throwsAsync(call(), { instanceOf: ServiceError });
    t.is(Code[error?.code ?? -1], "FAILED_PRECONDITION", error?.message);
  }
  t.is(await stock(full.productId), MAX_STOCK);
});
