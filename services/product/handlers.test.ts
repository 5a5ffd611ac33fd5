// ProductService handlers called directly, each test on its own in-memory database. The
// reservation tests reach the store too, for expiry, which a timer drives in the real service.
import test, { type ExecutionContext } from "ava";
import type { Duration } from "../../gen/ts/google/protobuf/duration.js";
import {
  CommitReservationRequest,
  CreateProductRequest,
  GetProductRequest,
  ListProductsRequest,
  type Product,
  ReleaseReservationRequest,
  type Reservation,
  ReservationState,
  ReserveStockRequest,
  UpdateProductRequest,
} from "../../gen/ts/shop/product/v1/product.js";
import { openDatabase } from "../../kit/db.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { encodePageToken } from "../../kit/page-token.js";
import { callContext } from "../../test/helpers/context.js";
import { productHandlers } from "./handlers.js";
import { migrations } from "./migrations/index.js";
import { ProductStore } from "./store.js";

const ctx = (method: string) => callContext("shop.product.v1.ProductService", method);

const chars = (n: number, c = "x") => c.repeat(n);
const { HELD, COMMITTED, RELEASED, EXPIRED } = {
  HELD: ReservationState.RESERVATION_STATE_HELD,
  COMMITTED: ReservationState.RESERVATION_STATE_COMMITTED,
  RELEASED: ReservationState.RESERVATION_STATE_RELEASED,
  EXPIRED: ReservationState.RESERVATION_STATE_EXPIRED,
};

interface NewProduct {
  name?: string;
  description?: string;
  stock?: number;
  amountMinor?: string;
  currencyCode?: string;
}

async function setup(t: ExecutionContext) {
  const db = await openDatabase(":memory:", migrations);
  t.teardown(() => db.destroy());
  const store = new ProductStore(db);
  const handlers = productHandlers(store);

  const create = async (fields: NewProduct = {}) =>
    (
      await handlers.createProduct(
        CreateProductRequest.fromPartial({
          product: {
            name: fields.name ?? "Mug",
            description: fields.description ?? "",
            price: {
              currencyCode: fields.currencyCode ?? "EUR",
              amountMinor: fields.amountMinor ?? "1250",
            },
            stockQuantity: fields.stock ?? 10,
          },
        }),
        ctx("CreateProduct"),
      )
    ).product as Product;

  const get = async (productId: string) =>
    (await handlers.getProduct(GetProductRequest.fromPartial({ productId }), ctx("GetProduct")))
      .product as Product;

  const stock = async (...ids: string[]) =>
    Promise.all(ids.map(async (id) => (await get(id)).stockQuantity));

  const count = async () =>
    (
      await handlers.listProducts(
        ListProductsRequest.fromPartial({ pageSize: 1000 }),
        ctx("ListProducts"),
      )
    ).products.length;

  const reserve = async (
    reservationId: string,
    lines: [string, number][],
    ttl: Duration | "none" = { seconds: "60", nanos: 0 },
  ) =>
    (
      await handlers.reserveStock(
        ReserveStockRequest.fromPartial({
          reservationId,
          lines: lines.map(([productId, quantity]) => ({ productId, quantity })),
          ttl: ttl === "none" ? undefined : ttl,
        }),
        ctx("ReserveStock"),
      )
    ).reservation as Reservation;

  const commit = async (reservationId: string) =>
    (
      await handlers.commitReservation(
        CommitReservationRequest.fromPartial({ reservationId }),
        ctx("CommitReservation"),
      )
    ).reservation as Reservation;

  const release = async (reservationId: string) =>
    (
      await handlers.releaseReservation(
        ReleaseReservationRequest.fromPartial({ reservationId }),
        ctx("ReleaseReservation"),
      )
    ).reservation as Reservation;

  return { db, store, handlers, create, get, stock, count, reserve, commit, release };
}

/** Asserts INVALID_ARGUMENT whose BadRequest names exactly `fields`, in order. */
async function invalid(
  t: ExecutionContext,
  call: Promise<unknown>,
  fields: string[],
  reason = "INVALID_ARGUMENT",
) {
  const error = await t.throwsAsync(call, { instanceOf: ServiceError });
  t.is(error?.code, Code.INVALID_ARGUMENT, error?.message);
  t.is(error?.details.reason, reason);
  t.deepEqual(
    error?.details.fieldViolations?.map((v) => v.field),
    fields,
  );
}

async function fails(
  t: ExecutionContext,
  call: Promise<unknown>,
  code: Code,
  reason: string,
): Promise<ServiceError | undefined> {
  const error = await t.throwsAsync(call, { instanceOf: ServiceError });
  t.is(error?.code, code, error?.message);
  t.is(error?.details.reason, reason);
  return error;
}

// CreateProduct

test("CreateProduct assigns an id and times and returns the fields it was given", async (t) => {
  const { handlers, get } = await setup(t);
  const before = Date.now();
  const { product } = await handlers.createProduct(
    CreateProductRequest.fromPartial({
      product: {
        productId: "prd_chosen_by_client",
        name: "Espresso cup",
        description: "Porcelain, 90 ml",
        price: { currencyCode: "EUR", amountMinor: "1299" },
        stockQuantity: 42,
        createTime: new Date(0),
        updateTime: new Date(0),
      },
    }),
    ctx("CreateProduct"),
  );
  t.regex(product?.productId ?? "", /^prd_[A-Za-z0-9_-]{16}$/);
  t.is(product?.name, "Espresso cup");
  t.is(product?.description, "Porcelain, 90 ml");
  t.deepEqual(product?.price, { currencyCode: "EUR", amountMinor: "1299" });
  t.is(product?.stockQuantity, 42);
  t.true((product?.createTime?.getTime() ?? 0) >= before);
  t.deepEqual(product?.updateTime, product?.createTime);
  t.deepEqual(await get(product?.productId ?? ""), product);
});

test("CreateProduct accepts the boundary values and keeps large amounts exact", async (t) => {
  const { create, get } = await setup(t);
  const edge = await create({
    name: chars(200),
    description: chars(2000),
    stock: 1_000_000_000,
    amountMinor: "9007199254740991",
  });
  t.is(edge.name.length, 200);
  t.is(edge.description.length, 2000);
  t.is(edge.stockQuantity, 1_000_000_000);
  t.is((await get(edge.productId)).price?.amountMinor, "9007199254740991");
  const free = await create({ name: "x", stock: 0, amountMinor: "0" });
  t.deepEqual((await get(free.productId)).price, { currencyCode: "EUR", amountMinor: "0" });
  t.is(free.stockQuantity, 0);
});

test("CreateProduct refuses a missing product", async (t) => {
  const { handlers, count } = await setup(t);
  await invalid(
    t,
    handlers.createProduct(CreateProductRequest.fromPartial({}), ctx("CreateProduct")),
    ["product"],
  );
  t.is(await count(), 0);
});

const badProducts: [string, Partial<Product>, string[]][] = [
  ["an empty name", { name: "" }, ["product.name"]],
  ["a 201-character name", { name: chars(201) }, ["product.name"]],
  ["a 2001-character description", { description: chars(2001) }, ["product.description"]],
  ["a missing price", { price: undefined }, ["product.price"]],
  [
    "a lower-case currency",
    { price: { currencyCode: "eur", amountMinor: "1" } },
    ["product.price.currency_code"],
  ],
  [
    "a four-letter currency",
    { price: { currencyCode: "EURO", amountMinor: "1" } },
    ["product.price.currency_code"],
  ],
  [
    "an empty currency",
    { price: { currencyCode: "", amountMinor: "1" } },
    ["product.price.currency_code"],
  ],
  [
    "a currency with a digit",
    { price: { currencyCode: "E1R", amountMinor: "1" } },
    ["product.price.currency_code"],
  ],
  [
    "a negative amount",
    { price: { currencyCode: "EUR", amountMinor: "-1" } },
    ["product.price.amount_minor"],
  ],
  [
    "a non-numeric amount",
    { price: { currencyCode: "EUR", amountMinor: "abc" } },
    ["product.price.amount_minor"],
  ],
  [
    "a fractional amount",
    { price: { currencyCode: "EUR", amountMinor: "12.5" } },
    ["product.price.amount_minor"],
  ],
  [
    "an amount above 2^53 - 1",
    { price: { currencyCode: "EUR", amountMinor: "9007199254740992" } },
    ["product.price.amount_minor"],
  ],
  ["a negative stock", { stockQuantity: -1 }, ["product.stock_quantity"]],
  ["a stock above 1,000,000,000", { stockQuantity: 1_000_000_001 }, ["product.stock_quantity"]],
  [
    "several bad fields at once",
    { name: "", price: { currencyCode: "eur", amountMinor: "-1" }, stockQuantity: -5 },
    [
      "product.name",
      "product.price.currency_code",
      "product.price.amount_minor",
      "product.stock_quantity",
    ],
  ],
];

for (const [name, override, fields] of badProducts) {
  test(`CreateProduct refuses ${name} and writes nothing`, async (t) => {
    const { handlers, count } = await setup(t);
    const product = {
      name: "Mug",
      description: "",
      price: { currencyCode: "EUR", amountMinor: "100" },
      stockQuantity: 1,
      ...override,
    };
    await invalid(
      t,
      handlers.createProduct(CreateProductRequest.fromPartial({ product }), ctx("CreateProduct")),
      fields,
    );
    t.is(await count(), 0);
  });
}

// GetProduct

test("GetProduct refuses an empty or too long id", async (t) => {
  const { handlers } = await setup(t);
  for (const productId of ["", chars(65)]) {
    await invalid(
      t,
      handlers.getProduct(GetProductRequest.fromPartial({ productId }), ctx("GetProduct")),
      ["product_id"],
    );
  }
});

test("GetProduct of an unknown id is NOT_FOUND with reason PRODUCT_NOT_FOUND", async (t) => {
  const { get } = await setup(t);
  const error = await fails(t, get("prd_missing"), Code.NOT_FOUND, "PRODUCT_NOT_FOUND");
  t.deepEqual(error?.details.metadata, { product_id: "prd_missing" });
});

// ListProducts

async function listAll(
  handlers: Awaited<ReturnType<typeof setup>>["handlers"],
  pageSize: number,
  inStockOnly: boolean,
) {
  const ids: string[] = [];
  const sizes: number[] = [];
  let pageToken = "";
  do {
    const page = await handlers.listProducts(
      ListProductsRequest.fromPartial({ pageSize, pageToken, inStockOnly }),
      ctx("ListProducts"),
    );
    sizes.push(page.products.length);
    ids.push(...page.products.map((p) => p.productId));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return { ids, sizes };
}

test("ListProducts pages through every product oldest first", async (t) => {
  const { handlers, create } = await setup(t);
  const created: string[] = [];
  for (let i = 0; i < 7; i++) created.push((await create({ name: `P${i}` })).productId);
  t.deepEqual(await listAll(handlers, 3, false), { ids: created, sizes: [3, 3, 1] });
  t.deepEqual(await listAll(handlers, 0, false), { ids: created, sizes: [7] });
  t.deepEqual(await listAll(handlers, 5000, false), { ids: created, sizes: [7] });
});

test("ListProducts with in_stock_only skips products without stock, on every page", async (t) => {
  const { handlers, create, reserve } = await setup(t);
  const stocks = [0, 3, 0, 0, 1, 5, 0, 2, 1];
  const products = [];
  for (const stock of stocks) products.push(await create({ stock }));
  const inStock = products.filter((p) => p.stockQuantity > 0).map((p) => p.productId);
  t.deepEqual(await listAll(handlers, 2, true), { ids: inStock, sizes: [2, 2, 1] });

  // Stock is live: a reservation that takes the last unit takes the product off the list.
  const [last] = products.filter((p) => p.stockQuantity === 1);
  await reserve("r-last", [[last?.productId ?? "", 1]]);
  t.deepEqual(
    (await listAll(handlers, 2, true)).ids,
    inStock.filter((id) => id !== last?.productId),
  );
  t.is((await listAll(handlers, 100, false)).ids.length, stocks.length);
});

test("ListProducts refuses a token reused with the other in_stock_only", async (t) => {
  const { handlers, create } = await setup(t);
  for (let i = 0; i < 3; i++) await create();
  for (const inStockOnly of [true, false]) {
    const { nextPageToken } = await handlers.listProducts(
      ListProductsRequest.fromPartial({ pageSize: 1, inStockOnly }),
      ctx("ListProducts"),
    );
    t.not(nextPageToken, "");
    await invalid(
      t,
      handlers.listProducts(
        ListProductsRequest.fromPartial({
          pageSize: 1,
          pageToken: nextPageToken,
          inStockOnly: !inStockOnly,
        }),
        ctx("ListProducts"),
      ),
      ["page_token"],
      "INVALID_PAGE_TOKEN",
    );
  }
});

test("ListProducts refuses a negative page_size and tokens it never issued", async (t) => {
  const { handlers, create } = await setup(t);
  for (let i = 0; i < 2; i++) await create();
  await invalid(
    t,
    handlers.listProducts(ListProductsRequest.fromPartial({ pageSize: -1 }), ctx("ListProducts")),
    ["page_size"],
  );
  const { nextPageToken: real } = await handlers.listProducts(
    ListProductsRequest.fromPartial({ pageSize: 1 }),
    ctx("ListProducts"),
  );
  const [body = "", mac = ""] = real.split(".");
  const flip = (s: string) => (s[0] === "A" ? "B" : "A") + s.slice(1);
  for (const pageToken of [
    "garbage",
    `${flip(body)}.${mac}`,
    `${body}.${flip(mac)}`,
    encodePageToken(1),
    encodePageToken(1, { userId: "" }),
  ]) {
    await invalid(
      t,
      handlers.listProducts(ListProductsRequest.fromPartial({ pageToken }), ctx("ListProducts")),
      ["page_token"],
      "INVALID_PAGE_TOKEN",
    );
  }
});

// UpdateProduct

const updateRequest = (product: Partial<Product> | undefined, updateMask: string[] | undefined) =>
  UpdateProductRequest.fromPartial({ product, updateMask });

test("UpdateProduct changes only the masked fields", async (t) => {
  const { handlers, create, get } = await setup(t);
  const mug = await create({ name: "Mug", description: "Blue", stock: 5, amountMinor: "900" });
  while (Date.now() <= (mug.createTime?.getTime() ?? 0)) await new Promise(setImmediate);
  const changed = {
    productId: mug.productId,
    name: "Big mug",
    description: "Red",
    price: { currencyCode: "USD", amountMinor: "1100" },
    stockQuantity: 0,
  };

  const { product: renamed } = await handlers.updateProduct(
    updateRequest(changed, ["name"]),
    ctx("UpdateProduct"),
  );
  t.deepEqual(
    { ...renamed, updateTime: undefined },
    { ...mug, name: "Big mug", updateTime: undefined },
  );
  t.true((renamed?.updateTime?.getTime() ?? 0) > (mug.createTime?.getTime() ?? 0));

  const { product: all } = await handlers.updateProduct(
    updateRequest(changed, ["description", "price", "stock_quantity"]),
    ctx("UpdateProduct"),
  );
  t.is(all?.description, "Red");
  t.deepEqual(all?.price, { currencyCode: "USD", amountMinor: "1100" });
  t.is(all?.stockQuantity, 0);
  t.deepEqual(all?.createTime, mug.createTime);
  t.deepEqual(await get(mug.productId), all);
});

test("UpdateProduct of the price leaves existing reservations at their snapshot", async (t) => {
  const { handlers, create, reserve } = await setup(t);
  const mug = await create({ amountMinor: "1000", stock: 10 });
  const before = await reserve("r-before", [[mug.productId, 1]]);
  await handlers.updateProduct(
    updateRequest(
      { productId: mug.productId, price: { currencyCode: "EUR", amountMinor: "1500" } },
      ["price"],
    ),
    ctx("UpdateProduct"),
  );
  const repeat = await reserve("r-before", [[mug.productId, 1]]);
  t.deepEqual(repeat.lines[0]?.unitPrice, { currencyCode: "EUR", amountMinor: "1000" });
  t.deepEqual(repeat, before);
  const after = await reserve("r-after", [[mug.productId, 1]]);
  t.deepEqual(after.lines[0]?.unitPrice, { currencyCode: "EUR", amountMinor: "1500" });
});

test("UpdateProduct of an unknown product is NOT_FOUND with reason PRODUCT_NOT_FOUND", async (t) => {
  const { handlers } = await setup(t);
  await fails(
    t,
    handlers.updateProduct(
      updateRequest({ productId: "prd_missing", name: "X" }, ["name"]),
      ctx("UpdateProduct"),
    ),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );
});

const badUpdates: [string, Partial<Product> | undefined, string[] | undefined, string[]][] = [
  ["a missing product", undefined, ["name"], ["product"]],
  ["an empty product_id", { productId: "", name: "X" }, ["name"], ["product.product_id"]],
  [
    "a 65-character product_id",
    { productId: chars(65), name: "X" },
    ["name"],
    ["product.product_id"],
  ],
  ["a missing mask", { name: "X" }, undefined, ["update_mask"]],
  ["an empty mask", { name: "X" }, [], ["update_mask"]],
  ["an unknown path", { name: "X" }, ["colour"], ["update_mask"]],
  ["a camelCase path", { stockQuantity: 1 }, ["stockQuantity"], ["update_mask"]],
  ["the immutable product_id", {}, ["product_id"], ["update_mask"]],
  ["the output-only create_time", {}, ["create_time"], ["update_mask"]],
  ["the output-only update_time", {}, ["update_time"], ["update_mask"]],
  [
    "a sub-path of price",
    { price: { currencyCode: "EUR", amountMinor: "1" } },
    ["price.amount_minor"],
    ["update_mask"],
  ],
  ["an empty name", { name: "" }, ["name"], ["product.name"]],
  [
    "a 2001-character description",
    { description: chars(2001) },
    ["description"],
    ["product.description"],
  ],
  ["a missing price", { price: undefined }, ["price"], ["product.price"]],
  [
    "a bad currency",
    { price: { currencyCode: "EURO", amountMinor: "1" } },
    ["price"],
    ["product.price.currency_code"],
  ],
  [
    "a negative amount",
    { price: { currencyCode: "EUR", amountMinor: "-1" } },
    ["price"],
    ["product.price.amount_minor"],
  ],
  ["a negative stock", { stockQuantity: -1 }, ["stock_quantity"], ["product.stock_quantity"]],
  [
    "a stock above the maximum",
    { stockQuantity: 1_000_000_001 },
    ["stock_quantity"],
    ["product.stock_quantity"],
  ],
  ["a bad path next to a good one", { name: "X" }, ["name", "product_id"], ["update_mask"]],
];

for (const [name, product, mask, fields] of badUpdates) {
  test(`UpdateProduct refuses ${name} and changes nothing`, async (t) => {
    const { handlers, create, get } = await setup(t);
    const mug = await create();
    const target = product && { productId: mug.productId, ...product };
    await invalid(
      t,
      handlers.updateProduct(updateRequest(target, mask), ctx("UpdateProduct")),
      fields,
    );
    t.deepEqual(await get(mug.productId), mug);
  });
}

// ReserveStock

test("ReserveStock holds every line at the current price, in request order", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 10, amountMinor: "500" });
  const b = await create({ stock: 3, amountMinor: "250" });
  const r = await reserve("r-1", [
    [b.productId, 3],
    [a.productId, 4],
  ]);
  t.is(r.reservationId, "r-1");
  t.is(r.state, HELD);
  t.deepEqual(r.lines, [
    { productId: b.productId, quantity: 3, unitPrice: { currencyCode: "EUR", amountMinor: "250" } },
    { productId: a.productId, quantity: 4, unitPrice: { currencyCode: "EUR", amountMinor: "500" } },
  ]);
  t.is((r.expireTime?.getTime() ?? 0) - (r.createTime?.getTime() ?? 0), 60_000);
  t.deepEqual(await stock(a.productId, b.productId), [6, 0], "held units leave the stock");
});

test("ReserveStock without a ttl holds for the default 5 minutes", async (t) => {
  const { create, reserve } = await setup(t);
  const a = await create();
  const r = await reserve("r-default", [[a.productId, 1]], "none");
  t.is((r.expireTime?.getTime() ?? 0) - (r.createTime?.getTime() ?? 0), 5 * 60_000);
  const min = await reserve("r-min", [[a.productId, 1]], { seconds: "1", nanos: 0 });
  t.is((min.expireTime?.getTime() ?? 0) - (min.createTime?.getTime() ?? 0), 1_000);
  const max = await reserve("r-max", [[a.productId, 1]], { seconds: "3600", nanos: 0 });
  t.is((max.expireTime?.getTime() ?? 0) - (max.createTime?.getTime() ?? 0), 3_600_000);
});

test("ReserveStock is all or nothing and names every short product", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 5 });
  const b = await create({ stock: 1 });
  const c = await create({ stock: 0 });
  const error = await fails(
    t,
    reserve("r-short", [
      [a.productId, 5],
      [b.productId, 2],
      [c.productId, 1],
    ]),
    Code.FAILED_PRECONDITION,
    "INSUFFICIENT_STOCK",
  );
  t.deepEqual(error?.details.preconditionViolations, [
    { type: "STOCK", subject: b.productId, description: "requested 2, 1 available" },
    { type: "STOCK", subject: c.productId, description: "requested 1, 0 available" },
  ]);
  t.deepEqual(await stock(a.productId, b.productId, c.productId), [5, 1, 0], "nothing held");

  // One short line among good ones is enough to hold nothing.
  const one = await fails(
    t,
    reserve("r-short", [
      [a.productId, 1],
      [b.productId, 2],
    ]),
    Code.FAILED_PRECONDITION,
    "INSUFFICIENT_STOCK",
  );
  t.deepEqual(
    one?.details.preconditionViolations?.map((v) => v.subject),
    [b.productId],
  );
  t.deepEqual(await stock(a.productId, b.productId, c.productId), [5, 1, 0], "nothing held");

  // The failed call did not claim the id: it can still hold what is available.
  const r = await reserve("r-short", [[a.productId, 5]]);
  t.is(r.state, HELD);
  t.deepEqual(await stock(a.productId), [0]);
});

test("ReserveStock with an unknown product is NOT_FOUND and holds nothing", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 5 });
  const error = await fails(
    t,
    reserve("r-unknown", [
      [a.productId, 2],
      ["prd_missing", 1],
    ]),
    Code.NOT_FOUND,
    "PRODUCT_NOT_FOUND",
  );
  t.deepEqual(error?.details.metadata, { product_id: "prd_missing" });
  t.deepEqual(await stock(a.productId), [5]);
});

test("ReserveStock repeated with the same lines returns the reservation and holds once", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const b = await create({ stock: 10 });
  const lines: [string, number][] = [
    [a.productId, 2],
    [b.productId, 3],
  ];
  const first = await reserve("r-repeat", lines);
  const again = await reserve("r-repeat", lines, { seconds: "600", nanos: 0 });
  t.deepEqual(again, first, "a repeat returns the reservation unchanged, its TTL included");
  t.deepEqual(await stock(a.productId, b.productId), [8, 7]);
});

test("ReserveStock with a used id and other lines is ALREADY_EXISTS and holds nothing", async (t) => {
  const { create, reserve, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const b = await create({ stock: 10 });
  await reserve("r-used", [
    [a.productId, 2],
    [b.productId, 3],
  ]);
  const others: [string, number][][] = [
    [
      [a.productId, 2],
      [b.productId, 4],
    ],
    [
      [b.productId, 3],
      [a.productId, 2],
    ],
    [[a.productId, 2]],
    [
      [a.productId, 2],
      [b.productId, 3],
      ["prd_other", 1],
    ],
  ];
  for (const lines of others) {
    const error = await fails(
      t,
      reserve("r-used", lines),
      Code.ALREADY_EXISTS,
      "RESERVATION_MISMATCH",
    );
    t.deepEqual(error?.details.metadata, { reservation_id: "r-used" });
  }
  t.deepEqual(await stock(a.productId, b.productId), [8, 7]);
});

const badReservations: [string, string, [string, number][], Duration | undefined, string[]][] = [
  ["an empty reservation_id", "", [["p", 1]], undefined, ["reservation_id"]],
  ["a 65-character reservation_id", chars(65), [["p", 1]], undefined, ["reservation_id"]],
  ["no lines", "r", [], undefined, ["lines"]],
  [
    "101 lines",
    "r",
    Array.from({ length: 101 }, (_, i): [string, number] => [`p${i}`, 1]),
    undefined,
    ["lines"],
  ],
  ["a zero quantity", "r", [["p", 0]], undefined, ["lines[0].quantity"]],
  [
    "a negative quantity",
    "r",
    [
      ["p", 1],
      ["q", -3],
    ],
    undefined,
    ["lines[1].quantity"],
  ],
  ["a quantity above 10,000", "r", [["p", 10_001]], undefined, ["lines[0].quantity"]],
  ["an empty product_id", "r", [["", 1]], undefined, ["lines[0].product_id"]],
  ["a 65-character product_id", "r", [[chars(65), 1]], undefined, ["lines[0].product_id"]],
  [
    "a product twice",
    "r",
    [
      ["p", 1],
      ["q", 1],
      ["p", 2],
    ],
    undefined,
    ["lines[2].product_id"],
  ],
  ["a zero ttl", "r", [["p", 1]], { seconds: "0", nanos: 0 }, ["ttl"]],
  ["a ttl under a second", "r", [["p", 1]], { seconds: "0", nanos: 999_000_000 }, ["ttl"]],
  ["a ttl over an hour", "r", [["p", 1]], { seconds: "3601", nanos: 0 }, ["ttl"]],
  ["a negative ttl", "r", [["p", 1]], { seconds: "-60", nanos: 0 }, ["ttl"]],
];

for (const [name, reservationId, lines, ttl, fields] of badReservations) {
  test(`ReserveStock refuses ${name} and holds nothing`, async (t) => {
    const { handlers, create, stock, db } = await setup(t);
    const p = await create({ stock: 100 });
    const ids = new Map([
      ["p", p.productId],
      ["q", (await create({ stock: 100 })).productId],
    ]);
    await invalid(
      t,
      handlers.reserveStock(
        ReserveStockRequest.fromPartial({
          reservationId,
          lines: lines.map(([id, quantity]) => ({ productId: ids.get(id) ?? id, quantity })),
          ttl,
        }),
        ctx("ReserveStock"),
      ),
      fields,
    );
    t.deepEqual(await stock(p.productId, ids.get("q") ?? ""), [100, 100]);
    t.deepEqual(await db("reservations").count({ n: "*" }), [{ n: 0 }]);
  });
}

// CommitReservation

test("CommitReservation makes a held reservation permanent, idempotently", async (t) => {
  const { create, reserve, commit, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const held = await reserve("r-commit", [[a.productId, 4]]);
  const committed = await commit("r-commit");
  t.deepEqual(committed, { ...held, state: COMMITTED });
  t.deepEqual(await commit("r-commit"), committed, "a second commit returns it unchanged");
  t.deepEqual(await stock(a.productId), [6], "committed units stay sold");
  t.deepEqual(await reserve("r-commit", [[a.productId, 4]]), committed);
});

test("CommitReservation of an unknown id is NOT_FOUND with reason RESERVATION_NOT_FOUND", async (t) => {
  const { commit } = await setup(t);
  const error = await fails(t, commit("r-missing"), Code.NOT_FOUND, "RESERVATION_NOT_FOUND");
  t.deepEqual(error?.details.metadata, { reservation_id: "r-missing" });
});

test("CommitReservation after a release is FAILED_PRECONDITION RESERVATION_NOT_HELD", async (t) => {
  const { create, reserve, commit, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  await reserve("r-released", [[a.productId, 4]]);
  await release("r-released");
  const error = await fails(
    t,
    commit("r-released"),
    Code.FAILED_PRECONDITION,
    "RESERVATION_NOT_HELD",
  );
  t.deepEqual(error?.details.metadata, { reservation_id: "r-released" });
  t.deepEqual(await stock(a.productId), [10]);
  // A released tombstone of an unknown id cannot be committed either.
  await release("r-tombstone");
  await fails(t, commit("r-tombstone"), Code.FAILED_PRECONDITION, "RESERVATION_NOT_HELD");
});

test("CommitReservation and ReleaseReservation refuse an empty or too long id", async (t) => {
  const { commit, release, db } = await setup(t);
  for (const id of ["", chars(65)]) {
    await invalid(t, commit(id), ["reservation_id"]);
    await invalid(t, release(id), ["reservation_id"]);
  }
  t.deepEqual(await db("reservations").count({ n: "*" }), [{ n: 0 }]);
});

// ReleaseReservation

test("ReleaseReservation gives held units back, once", async (t) => {
  const { create, reserve, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const b = await create({ stock: 10 });
  const held = await reserve("r-release", [
    [a.productId, 4],
    [b.productId, 1],
  ]);
  const released = await release("r-release");
  t.deepEqual(released, { ...held, state: RELEASED });
  t.deepEqual(await stock(a.productId, b.productId), [10, 10]);
  t.deepEqual(await release("r-release"), released, "a second release returns it unchanged");
  t.deepEqual(await stock(a.productId, b.productId), [10, 10], "and gives nothing back twice");
});

test("ReleaseReservation of a committed reservation returns its stock", async (t) => {
  const { create, reserve, commit, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  await reserve("r-sold", [[a.productId, 7]]);
  await commit("r-sold");
  t.deepEqual(await stock(a.productId), [3]);
  const released = await release("r-sold");
  t.is(released.state, RELEASED);
  t.deepEqual(await stock(a.productId), [10]);
  await release("r-sold");
  t.deepEqual(await stock(a.productId), [10]);
});

test("ReleaseReservation of an unknown id leaves a tombstone a late ReserveStock cannot use", async (t) => {
  const { create, reserve, release, commit, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const tombstone = await release("r-late");
  t.is(tombstone.reservationId, "r-late");
  t.is(tombstone.state, RELEASED);
  t.deepEqual(tombstone.lines, []);

  const late = await reserve("r-late", [[a.productId, 3]]);
  t.deepEqual(late, tombstone, "the late reservation returns the tombstone");
  t.deepEqual(await stock(a.productId), [10], "and holds nothing");
  await fails(t, commit("r-late"), Code.FAILED_PRECONDITION, "RESERVATION_NOT_HELD");
  t.deepEqual(await release("r-late"), tombstone);
});

// Expiry

test("expire() returns the units of held reservations past their TTL", async (t) => {
  const { store, create, reserve, commit, release, stock } = await setup(t);
  const a = await create({ stock: 10 });
  const held = await reserve("r-expire", [[a.productId, 4]], { seconds: "1", nanos: 0 });
  await reserve("r-kept", [[a.productId, 1]], { seconds: "3600", nanos: 0 });
  await reserve("r-committed", [[a.productId, 2]], { seconds: "1", nanos: 0 });
  await commit("r-committed");
  t.deepEqual(await stock(a.productId), [3]);

  const at = held.expireTime?.getTime() ?? 0;
  t.is(await store.expire(at - 1), 0, "nothing expires before its TTL");
  t.is(await store.expire(at + 1), 1, "only the held one past its TTL expires");
  t.deepEqual(await stock(a.productId), [7]);
  t.is(await store.expire(at + 1), 0, "expiry happens once");

  const expired = await reserve("r-expire", [[a.productId, 4]]);
  t.deepEqual(expired, { ...held, state: EXPIRED }, "a repeat returns it as it stands");
  t.deepEqual(await stock(a.productId), [7], "without holding again");
  await fails(t, commit("r-expire"), Code.FAILED_PRECONDITION, "RESERVATION_NOT_HELD");
  t.is((await release("r-expire")).state, EXPIRED, "releasing an expired one changes nothing");
  t.deepEqual(await stock(a.productId), [7]);
});

test("CommitReservation past the TTL expires the reservation instead of committing", async (t) => {
  const { store, create, commit, stock } = await setup(t);
  const a = await create({ stock: 10 });
  // The store takes any TTL; the handler's 1s minimum would make this test wait a second.
  const held = await store.reserve("r-late-commit", [{ productId: a.productId, quantity: 4 }], 1);
  while (Date.now() <= (held.expireTime?.getTime() ?? 0)) await new Promise(setImmediate);
  await fails(t, commit("r-late-commit"), Code.FAILED_PRECONDITION, "RESERVATION_NOT_HELD");
  t.deepEqual(await stock(a.productId), [10]);
});
