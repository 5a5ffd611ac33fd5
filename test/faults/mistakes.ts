// Client mistakes sent while the fault suite's load runs: bytes that do not decode, fields that
// break their rules, ids nobody issued. Each answer goes into the tally as kind "mistake"; none
// may be INTERNAL or UNKNOWN, whatever else is going on.
import type { OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import type { Client } from "../../kit/client/index.js";
import { openRawClient, undecodable } from "../helpers/bad-input.js";
import { orderLine } from "../helpers/fleet.js";
import { codeOf, type Tally } from "./load.js";

/** Each rpc with a message whose string field (the number given) holds invalid UTF-8. */
const RAW_CALLS: [string, number][] = [
  ["/shop.order.v1.OrderService/CreateOrder", 1],
  ["/shop.order.v1.OrderService/CancelOrder", 1],
  ["/shop.order.v1.OrderService/GetOrder", 1],
  ["/shop.order.v1.OrderService/ListOrders", 2],
  ["/grpc.health.v1.Health/Check", 1],
];

const badUtf8 = (field: number) => Buffer.from([(field << 3) | 2, 0x02, 0xc3, 0x28]);

/** Sends one round of mistakes to an order server; returns when every answer is in. */
export async function sendMistakes(
  tally: Tally,
  address: string,
  orders: Client<typeof OrderServiceService>,
  productId: string,
): Promise<void> {
  const client = openRawClient(address, 3_000);
  const raw = async (path: string, bytes: Buffer) => {
    const { error } = await client(path, bytes);
    tally.add("mistake", error ? codeOf(error) : "OK");
  };
  const typed = async (call: Promise<unknown>) => {
    await call.then(
      () => tally.add("mistake", "OK"),
      (error) => tally.add("mistake", codeOf(error)),
    );
  };
  try {
    await Promise.all([
      ...RAW_CALLS.flatMap(([path, field]) =>
        [...undecodable.map(([, bytes]) => bytes), badUtf8(field)].map((bytes) => raw(path, bytes)),
      ),
      typed(orders.createOrder({ userId: "", lines: [orderLine(productId, 0)], requestId: "" })),
      typed(orders.createOrder({ userId: "usr_x", lines: [], requestId: "x".repeat(65) })),
      typed(orders.cancelOrder({ orderId: "ord_nobody" })),
      typed(orders.getOrder({ orderId: "" })),
      typed(orders.listOrders({ userId: "", pageSize: -1, pageToken: "" })),
      typed(orders.listOrders({ userId: "", pageSize: 1, pageToken: "forged.token" })),
    ]);
  } finally {
    client.close();
  }
}
