// What makes two CreateOrder calls the same order, and the wait while another call places it.
import { setTimeout as sleep } from "node:timers/promises";
import type { CreateOrderRequest, Order } from "../../../gen/ts/shop/order/v1/order.js";
import type { CallContext } from "../../../kit/context.js";
import { Code, ServiceError } from "../../../kit/errors.js";

/**
 * The order a request asks for: the same user, products and quantities, its lines in any order
 * (a client may build them from a map). Each product is on one line at most, in both.
 */
export const sameRequest = (order: Order, request: CreateOrderRequest) =>
  order.userId === request.userId &&
  order.lines.length === request.lines.length &&
  order.lines.every((line, i) => {
    const asked = request.lines[i];
    if (asked?.productId === line.productId) return asked.quantity === line.quantity;
    return request.lines.some(
      (other) => other.productId === line.productId && other.quantity === line.quantity,
    );
  });

/**
 * Where the in-flight runs are kept. An idempotency key is its user's, so the user is part of
 * it; and a run in this process is joined only by calls asking for the same order (sameRequest):
 * another body's run may fail for what that body asked, or place what this call did not ask for.
 */
export const inflightKey = (request: CreateOrderRequest, key: string) =>
  JSON.stringify([
    request.userId,
    key,
    request.lines.map((line) => [line.productId, line.quantity]).sort(),
  ]);

/** Waits a little longer each time (20 ms up to 200) while another call places an order. */
export const placing = (waits: number, ctx: CallContext) =>
  sleep(Math.min(20 * 2 ** waits, 200), undefined, { signal: ctx.signal }).catch(() => {
    throw new ServiceError(Code.CANCELLED, "the call ended while its order was placed");
  });
