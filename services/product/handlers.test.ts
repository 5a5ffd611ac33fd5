// ProductService handlers for the catalogue (CreateProduct, GetProduct, ListProducts,
// UpdateProduct), called directly, each test on its own in-memory database.
import { Metadata } from "@grpc/grpc-js";
import test from "ava";
import {
  CreateProductRequest,
  GetProductRequest,
  ListProductsRequest,
  type Product,
  UpdateProductRequest,
} from "../../gen/ts/shop/product/v1/product.js";
import { SCAN_ROWS } from "../../kit/db/pages.js";
import { Code } from "../../kit/errors.js";
import { encodePageToken, PAGE_BYTES_KEY } from "../../kit/page-token.js";
import { callContext } from "../../test/helpers/context.js";
import { tamperedTokens } from "../../test/helpers/page-tokens.js";
import { expectInvalid, expectStatus } from "../../test/helpers/status.js";
import { chars, ctx, setup } from "./test-setup.js";

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
  await expectInvalid(
    t,
    handlers.createProduct(CreateProductRequest.fromPartial({}), ctx("CreateProduct")),
    ["product"],
  );
  t.is(await count(), 0);
});

const badProducts: [string, Partial<Product>, string[]][] = [
  ["an empty name", { name: "" }, ["product.name"]],
  ["a name of spaces", { name: " \u00a0\u3000 " }, ["product.name"]],
  ["a name of invisible characters", { name: "\u200b\u202e" }, ["product.name"]],
  // Letters and marks that show nothing: Hangul fillers, a grapheme joiner, a variation selector.
  ["a name of invisible letters", { name: "\u3164\u115f\uffa0\u034f\ufe0f" }, ["product.name"]],
  ["a name of a blank braille pattern", { name: "\u2800" }, ["product.name"]],
  ["a name with a line break", { name: "Teapot\nwith lid" }, ["product.name"]],
  ["a name with a line separator", { name: "Teapot\u2028with lid" }, ["product.name"]],
  ["a name with a paragraph separator", { name: "Teapot\u2029with lid" }, ["product.name"]],
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
    await expectInvalid(
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
    await expectInvalid(
      t,
      handlers.getProduct(GetProductRequest.fromPartial({ productId }), ctx("GetProduct")),
      ["product_id"],
    );
  }
});

test("GetProduct of an unknown id is NOT_FOUND with reason PRODUCT_NOT_FOUND", async (t) => {
  const { get } = await setup(t);
  const error = await expectStatus(t, get("prd_missing"), Code.NOT_FOUND, "PRODUCT_NOT_FOUND");
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

test("ListProducts keeps a page under the bytes its caller's metadata asks for, from 16 KiB to 2 MB", async (t) => {
  const { handlers, create } = await setup(t);
  const created: string[] = [];
  for (let i = 0; i < 30; i++) {
    created.push((await create({ name: `P${i}`, description: chars(2000) })).productId);
  }
  const list = async (asked: string | undefined) => {
    const sizes: number[] = [];
    const ids: string[] = [];
    let pageToken = "";
    do {
      const metadata = new Metadata();
      if (asked !== undefined) metadata.set(PAGE_BYTES_KEY, asked);
      const page = await handlers.listProducts(
        ListProductsRequest.fromPartial({ pageSize: 1000, pageToken }),
        callContext("shop.product.v1.ProductService", "ListProducts", { metadata }),
      );
      sizes.push(page.products.length);
      ids.push(...page.products.map((product) => product.productId));
      pageToken = page.nextPageToken;
    } while (pageToken !== "");
    t.deepEqual(ids, created);
    return sizes;
  };
  // A product here is about 2.1 KB: 16 KiB holds 7 of them.
  t.deepEqual(await list("16384"), [7, 7, 7, 7, 2]);
  t.deepEqual(await list("1000"), [7, 7, 7, 7, 2], "less than 16 KiB is 16 KiB");
  t.deepEqual(await list("32768"), [15, 15]);
  t.deepEqual(await list(undefined), [30]);
  t.deepEqual(await list("99999999999"), [30], "more than 2 MB is 2 MB");
  t.deepEqual(await list("lots"), [30], "not a number: not asked");
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

test("ListProducts with in_stock_only looks at a bounded run of rows per page, however many are sold out", async (t) => {
  const { handlers, create, db } = await setup(t);
  const first = await create({ stock: 1 });
  const soldOut = 2 * SCAN_ROWS + 500;
  await db.batchInsert(
    "products",
    Array.from({ length: soldOut }, (_, i) => ({
      product_id: `prd_sold_out_${i}`,
      name: "Sold out",
      description: "",
      currency_code: "EUR",
      price_minor: 100,
      stock_quantity: 0,
      create_time: 0,
      update_time: 0,
    })),
    500,
  );
  const last = await create({ stock: 1 });
  // A page past the rows it may look at ends early, even empty, and the next goes on from there.
  t.deepEqual(await listAll(handlers, 50, true), {
    ids: [first.productId, last.productId],
    sizes: [1, 0, 1],
  });
  t.is((await listAll(handlers, 1000, false)).ids.length, soldOut + 2);
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
    await expectInvalid(
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
  await expectInvalid(
    t,
    handlers.listProducts(ListProductsRequest.fromPartial({ pageSize: -1 }), ctx("ListProducts")),
    ["page_size"],
  );
  const { nextPageToken: real } = await handlers.listProducts(
    ListProductsRequest.fromPartial({ pageSize: 1 }),
    ctx("ListProducts"),
  );
  for (const pageToken of [
    "garbage",
    ...tamperedTokens(real),
    encodePageToken("/shop.user.v1.UserService/ListUsers", 1),
    encodePageToken("/shop.order.v1.OrderService/ListOrders", 1, { userId: "" }),
    // ListProducts' own filter, from another list.
    encodePageToken("/shop.order.v1.OrderService/ListOrders", 1, { inStockOnly: false }),
  ]) {
    await expectInvalid(
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

test("UpdateProduct that changes nothing leaves update_time; one changed field moves it", async (t) => {
  const { handlers, create, get } = await setup(t);
  const mug = await create({ name: "Mug", description: "Blue", stock: 5, amountMinor: "900" });
  while (Date.now() <= (mug.createTime?.getTime() ?? 0)) await new Promise(setImmediate);
  const everyField = ["name", "description", "price", "stock_quantity"];

  const { product: same } = await handlers.updateProduct(
    updateRequest(mug, everyField),
    ctx("UpdateProduct"),
  );
  t.deepEqual(same, mug, "the same values: nothing changed, update_time included");

  const { product: repriced } = await handlers.updateProduct(
    updateRequest({ ...mug, price: { currencyCode: "USD", amountMinor: "901" } }, everyField),
    ctx("UpdateProduct"),
  );
  t.true((repriced?.updateTime?.getTime() ?? 0) > (mug.updateTime?.getTime() ?? 0));
  t.deepEqual(await get(mug.productId), repriced);
});

test("a product's update_time moves on past the row's own, by UpdateProduct, a reservation and its release", async (t) => {
  // A write reads the clock before it waits for the row: one that waited behind a later write
  // finds an update_time ahead of its own `now`.
  const { db, handlers, create, get, reserve, release } = await setup(t);
  const mug = await create({ stock: 5 });
  const ahead = Date.now() + 60_000;
  await db("products").where({ product_id: mug.productId }).update({ update_time: ahead });
  const { product } = await handlers.updateProduct(
    updateRequest({ ...mug, name: "Cup" }, ["name"]),
    ctx("UpdateProduct"),
  );
  t.is(product?.updateTime?.getTime(), ahead + 1);
  await reserve("r-ahead", [[mug.productId, 1]]);
  t.is((await get(mug.productId)).updateTime?.getTime(), ahead + 2);
  await release("r-ahead");
  t.is((await get(mug.productId)).updateTime?.getTime(), ahead + 3);
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
  await expectStatus(
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
  ["a blank name", { name: "   " }, ["name"], ["product.name"]],
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
    await expectInvalid(
      t,
      handlers.updateProduct(updateRequest(target, mask), ctx("UpdateProduct")),
      fields,
    );
    t.deepEqual(await get(mug.productId), mug);
  });
}
