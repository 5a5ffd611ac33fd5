// A page token sealed with the server's key but holding a cursor the server never issues is the
// client's mistake: INVALID_ARGUMENT INVALID_PAGE_TOKEN, never INTERNAL. The tokens here are
// sealed with the development secret, as anyone who reads the source could.
import test from "ava";
import { ListOrdersRequest } from "../../gen/ts/shop/order/v1/order.js";
import { ListProductsRequest } from "../../gen/ts/shop/product/v1/product.js";
import { ListUsersRequest } from "../../gen/ts/shop/user/v1/user.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { sealText } from "../../kit/page-token.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { startFleet } from "../helpers/fleet.js";

/** A token sealed as the server seals one, around any text. */
const forge = sealText;

test("sealed page tokens with a cursor of the wrong shape are INVALID_PAGE_TOKEN", async (t) => {
  const fleet = await startFleet(t);
  for (let i = 0; i < 3; i++) {
    await addUser(fleet.users);
    await addProduct(fleet.products);
  }
  const lists: [string, unknown, (pageToken: string) => Promise<unknown>][] = [
    [
      "/shop.user.v1.UserService/ListUsers",
      null,
      (pageToken) => fleet.users.listUsers(ListUsersRequest.fromPartial({ pageToken })),
    ],
    [
      "/shop.product.v1.ProductService/ListProducts",
      { inStockOnly: false },
      (pageToken) => fleet.products.listProducts(ListProductsRequest.fromPartial({ pageToken })),
    ],
    [
      "/shop.order.v1.OrderService/ListOrders",
      { userId: "" },
      (pageToken) => fleet.orders.listOrders(ListOrdersRequest.fromPartial({ pageToken })),
    ],
  ];
  const cursors: unknown[] = [{}, [], null, "1", "abc", true, -1, 0, 1.5, 1e300, { seq: 1 }, [1]];
  for (const [rpc, filter, list] of lists) {
    // The server's own encoding of a real cursor is accepted, so the forgery is exact.
    await t.notThrowsAsync(list(forge(JSON.stringify({ l: rpc, c: 1, f: filter }))), rpc);
    const bodies = [
      ...cursors.map((c) => JSON.stringify({ l: rpc, c, f: filter })),
      // A real cursor, but of no list, or of another one.
      JSON.stringify({ c: 1, f: filter }),
      JSON.stringify({ l: "/shop.payment.v1.PaymentService/ListPayments", c: 1, f: filter }),
      "not json",
      "5",
      "null",
      '"text"',
      "[1,2]",
      JSON.stringify({ l: rpc, f: filter }),
    ];
    for (const body of bodies) {
      const error = await t.throwsAsync(list(forge(body)), { instanceOf: ServiceError });
      t.is(Code[error?.code ?? -1], "INVALID_ARGUMENT", `${rpc} ${body}: ${error?.message}`);
      t.is(error?.details.reason, "INVALID_PAGE_TOKEN", `${rpc} ${body}`);
    }
  }
});
