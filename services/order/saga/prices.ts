// An order's prices come from its reservation's snapshot, taken as the stock was committed.
import { type Order, OrderState } from "../../../gen/ts/shop/order/v1/order.js";
import type { Reservation } from "../../../gen/ts/shop/product/v1/inventory.js";
import { errors } from "../../../kit/errors.js";
import { totalOf } from "../../../kit/money.js";
import type { Prices } from "../store.js";

/** What the order costs, from its reservation's price snapshot (lines in the order's order). */
export function pricesOf(reservation: Reservation | undefined): Prices {
  const lines = (reservation?.lines ?? []).map(({ productId, quantity, unitPrice }) => {
    if (!unitPrice) throw new Error(`no price for ${productId} in ${reservation?.reservationId}`);
    return { quantity, unitPrice, unitPriceMinor: BigInt(unitPrice.amountMinor) };
  });
  const currencies = new Set(lines.map((line) => line.unitPrice.currencyCode));
  if (currencies.size !== 1) {
    throw errors.failedPrecondition(
      "CURRENCY_MISMATCH",
      `the products are priced in different currencies: ${[...currencies].join(", ")}`,
    );
  }
  const currencyCode = lines[0]?.unitPrice.currencyCode ?? "";
  return {
    currencyCode,
    totalMinor: totalOf(currencyCode, lines),
    unitPricesMinor: lines.map((line) => line.unitPriceMinor),
  };
}

/** The order as it is once confirmed at `prices`. */
export const pricedOrder = (order: Order, prices: Prices, updateTime: Date): Order => ({
  ...order,
  state: OrderState.ORDER_STATE_CONFIRMED,
  updateTime,
  total: { currencyCode: prices.currencyCode, amountMinor: prices.totalMinor.toString() },
  lines: order.lines.map((line, i) => ({
    ...line,
    unitPrice: {
      currencyCode: prices.currencyCode,
      amountMinor: String(prices.unitPricesMinor[i]),
    },
  })),
});
