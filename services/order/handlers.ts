import type { Order, OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import type { CallContext } from "../../kit/context.js";
import { requestedPage } from "../../kit/page-token.js";
import { requireAdmin, requireOwner, requireSelf } from "../../kit/security/auth.js";
import type { Handlers } from "../../kit/service.js";
import { check } from "../../kit/validate.js";
import type { OrderSaga } from "./saga/index.js";
import { CANCELLED, CANCELLING, CONFIRMED, FAILED, PENDING } from "./states.js";
import type { OrderStore } from "./store.js";
import type { OrderWatches } from "./watches.js";

const FINAL = new Set([CANCELLED, FAILED]);

/** OrderService: each rpc validates its request, then asks the saga or the store. */
export function orderHandlers(
  store: OrderStore,
  saga: OrderSaga,
  watches: OrderWatches,
): Handlers<typeof OrderServiceService> {
  /** The order, when the caller may see it: its owner or an admin. */
  const owned = async (orderId: string, ctx: CallContext) => {
    const { order } = await store.get(orderId);
    requireOwner(ctx, order.userId, "the order");
    return order;
  };
  return {
    async createOrder(request, ctx) {
      const v = check().id("user_id", request.userId).text("request_id", request.requestId, 64, 0);
      if (request.lines.length === 0 || request.lines.length > 100) {
        v.add("lines", "must hold 1 to 100 lines");
      }
      const seen = new Set<string>();
      request.lines.forEach((line, i) => {
        v.id(`lines[${i}].product_id`, line.productId);
        v.range(`lines[${i}].quantity`, line.quantity, 1, 10_000);
        if (seen.has(line.productId)) v.add(`lines[${i}].product_id`, "appears twice");
        seen.add(line.productId);
      });
      v.throwIfAny();
      requireSelf(ctx, request.userId, "user_id");
      return { order: await saga.create(request, ctx) };
    },

    async getOrder({ orderId }, ctx) {
      check().id("order_id", orderId).throwIfAny();
      return { order: await owned(orderId, ctx) };
    },

    async listOrders(request, ctx) {
      const { userId } = request;
      const v = check().text("user_id", userId, 64, 0);
      const page = requestedPage(v, ctx, request, { userId });
      if (userId === "") requireAdmin(ctx, "listing every user's orders");
      else requireOwner(ctx, userId, `the order list of user ${userId}`);
      const { orders, nextSeq } = await store.list(page.limit, page.after, page.bytes, { userId });
      return { orders, nextPageToken: page.tokenAfter(nextSeq) };
    },

    async cancelOrder({ orderId }, ctx) {
      check().id("order_id", orderId).throwIfAny();
      await owned(orderId, ctx);
      return { order: await saga.cancel(orderId, ctx) };
    },

    async *watchOrder({ orderId }, ctx) {
      check().id("order_id", orderId).throwIfAny();
      let last: Order = await owned(orderId, ctx);
      yield { order: last };
      while (!FINAL.has(last.state)) {
        await watches.changeFrom(orderId, last.state, ctx.signal);
        if (ctx.signal.aborted) return;
        const stored = await store.find(orderId);
        if (!stored) {
          // CreateOrder refused it: failed, then deleted, as no order was placed. Its end is that.
          yield { order: { ...last, state: FAILED, updateTime: new Date() } };
          return;
        }
        const { order: current, confirmedAt, cancellingSince } = stored;
        if (current.state === last.state) continue;
        // Moved on more than one step since the last read (on another replica, or between two
        // reads): the states it passed through first, each as it was then. An order a replica
        // before migration 0004 confirmed kept no time of it; its CONFIRMED takes the next one.
        const cancelled = current.state === CANCELLING || current.state === CANCELLED;
        if (last.state === PENDING && cancelled) {
          const updateTime = confirmedAt ?? cancellingSince ?? current.updateTime;
          yield { order: { ...current, state: CONFIRMED, updateTime } };
        }
        if (last.state !== CANCELLING && current.state === CANCELLED && cancellingSince) {
          yield { order: { ...current, state: CANCELLING, updateTime: cancellingSince } };
        }
        last = current;
        yield { order: current };
      }
    },
  };
}
