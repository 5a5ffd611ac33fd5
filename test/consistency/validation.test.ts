// Validation as the proto comments state it: lengths in Unicode code points, string fields that
// must be valid UTF-8, ISO 4217 currency codes, and Durations valid by their own definition.
import { BinaryWriter, WireType } from "@bufbuild/protobuf/wire";
import test, { type ExecutionContext } from "ava";
import { ListOrdersRequest } from "../../gen/ts/shop/order/v1/order.js";
import { ReserveStockRequest } from "../../gen/ts/shop/product/v1/inventory.js";
import { CreateProductRequest, ListProductsRequest } from "../../gen/ts/shop/product/v1/product.js";
import { CreateUserRequest, ListUsersRequest } from "../../gen/ts/shop/user/v1/user.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { rawClient } from "../helpers/bad-input.js";
import { orderLine, startFleet } from "../helpers/fleet.js";

async function refused(t: ExecutionContext, call: Promise<unknown>, field: string) {
  const error = await t.throwsAsync(call, { instanceOf: ServiceError });
  t.is(Code[error?.code ?? -1], "INVALID_ARGUMENT", error?.message);
  t.deepEqual(
    error?.details.fieldViolations?.map((v) => v.field),
    [field],
  );
  return error;
}

test("lengths count Unicode code points, not UTF-16 units", async (t) => {
  const fleet = await startFleet(t);
  const user = (displayName: string, email = `${displayName.length}@example.com`) =>
    fleet.users.createUser(CreateUserRequest.fromPartial({ user: { email, displayName } }));
  const emoji = "😀";
  const { user: created } = await user(emoji.repeat(100));
  t.is([...(created?.displayName ?? "")].length, 100);
  await user("é".repeat(100), "accent@example.com");
  await user(`${"a".repeat(99)}${emoji}`, "mixed@example.com");
  const error = await refused(t, user(emoji.repeat(101), "over@example.com"), "user.display_name");
  t.regex(error?.message ?? "", /at most 100 characters/);
  // An email is counted the same way, and must still contain "@" however it is written.
  await t.notThrowsAsync(user("Emoji", `${emoji.repeat(240)}@example.com`));
  await refused(t, user("No at", emoji.repeat(130)), "user.email");

  const product = (name: string) =>
    fleet.products.createProduct(
      CreateProductRequest.fromPartial({
        product: { name, price: { currencyCode: "EUR", amountMinor: "1" }, stockQuantity: 1 },
      }),
    );
  await t.notThrowsAsync(product("🫖".repeat(200)));
  await refused(t, product("🫖".repeat(201)), "product.name");
});

test("currency codes must be ISO 4217 codes in use, not just three capitals", async (t) => {
  const fleet = await startFleet(t);
  const price = (currencyCode: string) =>
    fleet.products.createProduct(
      CreateProductRequest.fromPartial({
        product: { name: "Mug", price: { currencyCode, amountMinor: "100" }, stockQuantity: 1 },
      }),
    );
  for (const code of ["EUR", "USD", "JPY", "CHF", "GBP", "SEK"]) {
    await t.notThrowsAsync(price(code), code);
  }
  for (const code of ["QQQ", "ZZZ", "ABC", "EUX"]) {
    await refused(t, price(code), "product.price.currency_code");
  }
  const { products } = await fleet.products.listProducts(ListProductsRequest.fromPartial({}));
  t.is(products.length, 6);
});

test("a Duration must have nanos within ±999,999,999 and the sign of its seconds", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 100 });
  let n = 0;
  const reserve = (seconds: string, nanos: number) =>
    fleet.inventory.reserveStock(
      ReserveStockRequest.fromPartial({
        reservationId: `ttl-${n++}`,
        lines: [orderLine(mug.productId, 1)],
        ttl: { seconds, nanos },
      }),
    );
  for (const [seconds, nanos] of [
    ["1", 2_000_000_000],
    ["0", 1_000_000_000],
    ["2", -1],
    ["-2", 500_000_000],
    ["1", -2_000_000_000],
  ] as const) {
    await refused(t, reserve(seconds, nanos), "ttl");
  }
  const { reservation } = await reserve("2", 999_999_999);
  t.is(
    (reservation?.expireTime?.getTime() ?? 0) - (reservation?.createTime?.getTime() ?? 0),
    2_999,
  );
  t.is((await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity, 99);
});

const BAD_UTF8 = Uint8Array.from([0x41, 0xff, 0xfe, 0x42, 0xc3]);
const text = (s: string) => new TextEncoder().encode(s);

test("invalid UTF-8 in any string field is refused, naming the field, and writes nothing", async (t) => {
  const fleet = await startFleet(t);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const raw = {
    user: rawClient(t, fleet.user.server.address),
    product: rawClient(t, fleet.product.server.address),
    order: rawClient(t, fleet.order.server.address),
  };
  const user = (email: Uint8Array, displayName: Uint8Array) => {
    const w = new BinaryWriter();
    w.tag(1, WireType.LengthDelimited).fork();
    w.tag(2, WireType.LengthDelimited).bytes(email);
    w.tag(3, WireType.LengthDelimited).bytes(displayName);
    w.join();
    return w.finish();
  };
  const product = (currency: Uint8Array) => {
    const w = new BinaryWriter();
    w.tag(1, WireType.LengthDelimited).fork();
    w.tag(2, WireType.LengthDelimited).bytes(text("Mug"));
    w.tag(4, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).bytes(currency);
    w.tag(2, WireType.Varint).int64(100);
    w.join();
    w.tag(5, WireType.Varint).int32(1);
    w.join();
    return w.finish();
  };
  const order = (productId: Uint8Array) => {
    const w = new BinaryWriter();
    w.tag(1, WireType.LengthDelimited).bytes(text("usr_x"));
    w.tag(2, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).bytes(text(mug.productId));
    w.tag(2, WireType.Varint).int32(1);
    w.join();
    w.tag(2, WireType.LengthDelimited).fork();
    w.tag(1, WireType.LengthDelimited).bytes(productId);
    w.tag(2, WireType.Varint).int32(1);
    w.join();
    return w.finish();
  };
  const cases: [keyof typeof raw, string, Uint8Array, string][] = [
    [
      "user",
      "/shop.user.v1.UserService/CreateUser",
      user(text("a@example.com"), BAD_UTF8),
      "user.display_name",
    ],
    ["user", "/shop.user.v1.UserService/CreateUser", user(BAD_UTF8, text("Ada")), "user.email"],
    [
      "user",
      "/shop.user.v1.UserService/GetUser",
      Uint8Array.from([0x0a, 2, 0xc3, 0x28]),
      "user_id",
    ],
    [
      "product",
      "/shop.product.v1.ProductService/CreateProduct",
      product(BAD_UTF8),
      "product.price.currency_code",
    ],
    ["order", "/shop.order.v1.OrderService/CreateOrder", order(BAD_UTF8), "lines[1].product_id"],
    [
      "order",
      "/shop.order.v1.OrderService/ListOrders",
      Uint8Array.from([0x12, 1, 0x80]),
      "page_token",
    ],
  ];
  for (const [service, path, bytes, field] of cases) {
    const { error } = await raw[service](path, bytes);
    t.is(Code[error?.code ?? -1], "INVALID_ARGUMENT", `${path} ${field}: ${error?.message}`);
    t.is(error?.details.reason, "MALFORMED_REQUEST", path);
    t.deepEqual(
      error?.details.fieldViolations?.map((v) => v.field),
      [field],
      path,
    );
  }
  // The same messages with valid text, U+FFFD itself included, are accepted.
  const accepted = await raw.user(
    "/shop.user.v1.UserService/CreateUser",
    user(text("a@example.com"), text("A\uFFFD")),
  );
  t.is(accepted.error, undefined);
  const users = await fleet.users.listUsers(ListUsersRequest.fromPartial({}));
  t.deepEqual(
    users.users.map((u) => u.displayName),
    ["A\uFFFD"],
  );
  const { products } = await fleet.products.listProducts(ListProductsRequest.fromPartial({}));
  t.is(products.length, 1);
  const { orders } = await fleet.orders.listOrders(ListOrdersRequest.fromPartial({}));
  t.is(orders.length, 0);
});

test("the NUL character is refused in every text field, naming the field, and writes nothing", async (t) => {
  const fleet = await startFleet(t);
  const user = await addUser(fleet.users);
  const mug = await addProduct(fleet.products, { stock: 5 });
  const nul = (s: string) => `${s}\u0000x`;
  const reserve = (reservationId: string, productId: string) =>
    fleet.inventory.reserveStock(
      ReserveStockRequest.fromPartial({
        reservationId,
        lines: [orderLine(productId, 1)],
        ttl: { seconds: "60" },
      }),
    );
  const calls: [Promise<unknown>, string][] = [
    [
      fleet.users.createUser({ user: { email: "nul@example.com", displayName: nul("Ada") } }),
      "user.display_name",
    ],
    [
      fleet.users.createUser({ user: { email: nul("a@example.com"), displayName: "Ada" } }),
      "user.email",
    ],
    [fleet.users.getUser({ userId: nul(user.userId) }), "user_id"],
    [
      fleet.products.createProduct(
        CreateProductRequest.fromPartial({
          product: {
            name: "Mug",
            description: nul("Stoneware"),
            price: { currencyCode: "EUR", amountMinor: "1" },
            stockQuantity: 1,
          },
        }),
      ),
      "product.description",
    ],
    [fleet.products.getProduct({ productId: nul(mug.productId) }), "product_id"],
    [reserve(nul("r"), mug.productId), "reservation_id"],
    [reserve("r-nul", nul(mug.productId)), "lines[0].product_id"],
    [
      fleet.orders.createOrder({
        userId: user.userId,
        lines: [orderLine(mug.productId, 1)],
        requestId: nul("req"),
      }),
      "request_id",
    ],
    [fleet.orders.listOrders(ListOrdersRequest.fromPartial({ userId: nul("usr") })), "user_id"],
    [fleet.orders.cancelOrder({ orderId: nul("ord") }), "order_id"],
  ];
  for (const [call, field] of calls) {
    const error = await refused(t, call, field);
    t.regex(error?.details.fieldViolations?.[0]?.description ?? "", /NUL/);
  }
  t.is((await fleet.users.listUsers(ListUsersRequest.fromPartial({}))).users.length, 1);
  t.is((await fleet.products.listProducts(ListProductsRequest.fromPartial({}))).products.length, 1);
  t.is((await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity, 5);
  t.is((await fleet.orders.listOrders(ListOrdersRequest.fromPartial({}))).orders.length, 0);
});
