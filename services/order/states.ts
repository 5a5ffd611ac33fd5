// An order's states by their short names, for the handlers, the saga and the store's readers.
import { OrderState } from "../../gen/ts/shop/order/v1/order.js";

export const { PENDING, CONFIRMED, CANCELLING, CANCELLED, FAILED } = {
  PENDING: OrderState.ORDER_STATE_PENDING,
  CONFIRMED: OrderState.ORDER_STATE_CONFIRMED,
  CANCELLING: OrderState.ORDER_STATE_CANCELLING,
  CANCELLED: OrderState.ORDER_STATE_CANCELLED,
  FAILED: OrderState.ORDER_STATE_FAILED,
};
