// What the saga suite's files share: a CreateOrder that must be refused, an order failed as a
// resend on another replica fails it, and a product's stock.
import type { ExecutionContext } from "ava";
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";
import type { Knex } from "../../kit/db/index.js";
import { ServiceError } from "../../kit/errors.js";
import { until } from "../helpers/eventually.js";
import { type clientsFor, orderLine } from "../helpers/fleet.js";

/** A CreateOrder of `quantity` of one product that must fail: its ServiceError. */
export const refusedCreate = (
  t: ExecutionContext,
  orders: ReturnType<typeof clientsFor>["orders"],
  userId: string,
  productId: string,
  quantity: number,
  requestId: string,
) =>
  t.throwsAsync(
    orders.createOrder({ userId, lines: [orderLine(productId, quantity)], requestId }),
    {
      instanceOf: ServiceError,
    },
  );

/**
 * What a resend on another replica does to an order it finds not yet reserving (settle()): fails
 * it, freeing its key. Waits for the one order to be written first; returns its id.
 */
export async function failOnceWritten(t: ExecutionContext, db: Knex): Promise<string> {
  const rows = () => db("orders").select("order_id");
  await until("the order to be written", async () => (await rows()).length === 1);
  const [row] = await rows();
  const failed = { state: OrderState.ORDER_STATE_FAILED, request_key: null };
  t.is(await db("orders").where({ order_id: row?.order_id }).update(failed), 1);
  return String(row?.order_id);
}

export const stockOf = async (
  fleet: { products: ReturnType<typeof clientsFor>["products"] },
  id: string,
) => (await fleet.products.getProduct({ productId: id })).product?.stockQuantity;
