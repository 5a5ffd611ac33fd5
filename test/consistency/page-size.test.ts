// A page a client asked for must reach it: gRPC clients refuse a message over 4 MB by default,
// so a list returns fewer items than page_size when the items are large, never a page the client
// cannot receive.
import test from "ava";
import { ListProductsRequest } from "../../gen/ts/shop/product/v1/product.js";
import { addProduct } from "../../scripts/lib/seed.js";
import { startFleet } from "../helpers/fleet.js";

test("ListProducts of 600 products of 9 KB each arrives in pages under the 4 MB limit", async (t) => {
  const fleet = await startFleet(t);
  const clef = "𝄞"; // four bytes of UTF-8, one character
  const ids: string[] = [];
  for (let batch = 0; batch < 12; batch++) {
    const created = await Promise.all(
      Array.from({ length: 50 }, () =>
        fleet.products.createProduct({
          product: {
            productId: "",
            name: clef.repeat(200),
            description: clef.repeat(2000),
            price: { currencyCode: "EUR", amountMinor: "1" },
            stockQuantity: 1,
            createTime: undefined,
            updateTime: undefined,
          },
        }),
      ),
    );
    ids.push(...created.map(({ product }) => product?.productId ?? ""));
  }
  await addProduct(fleet.products, { name: "small" });

  const seen: string[] = [];
  const sizes: number[] = [];
  let pageToken = "";
  do {
    const page = await fleet.products.listProducts(
      ListProductsRequest.fromPartial({ pageSize: 1000, pageToken }),
    );
    sizes.push(page.products.length);
    seen.push(...page.products.map((p) => p.productId));
    pageToken = page.nextPageToken;
  } while (pageToken);
  t.log(`pages of ${sizes.join(", ")} products`);
  t.true(sizes.length > 1);
  t.is(seen.length, 601);
  t.deepEqual(seen.slice(0, 600).sort(), ids.sort(), "every product once, in no page twice");
});
