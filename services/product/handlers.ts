import type { Product, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { newId } from "../../kit/ids.js";
import { checkMoney } from "../../kit/money.js";
import { requestedPage } from "../../kit/page-token.js";
import type { Handlers } from "../../kit/service.js";
import { check, type Violations } from "../../kit/validate.js";
import { MAX_STOCK, type ProductFields, type ProductStore } from "./store.js";

const MUTABLE = ["name", "description", "price", "stock_quantity"] as const;

function checkProduct(v: Violations, product: Product, paths: readonly string[]) {
  if (paths.includes("name")) v.name("product.name", product.name, 200);
  if (paths.includes("description")) v.text("product.description", product.description, 2000, 0);
  if (paths.includes("price")) checkMoney(v, "product.price", product.price);
  if (paths.includes("stock_quantity")) {
    v.range("product.stock_quantity", product.stockQuantity, 0, MAX_STOCK);
  }
}

function fieldsOf(product: Product): ProductFields {
  return {
    name: product.name,
    description: product.description,
    currencyCode: product.price?.currencyCode ?? "",
    priceMinor: product.price?.amountMinor ?? "0",
    stockQuantity: product.stockQuantity,
  };
}

/** ProductService: each rpc validates its request, then asks the store. */
export function productHandlers(store: ProductStore): Handlers<typeof ProductServiceService> {
  return {
    async createProduct({ product }) {
      const v = check();
      if (!product) v.add("product", "is required");
      else checkProduct(v, product, MUTABLE);
      v.throwIfAny();
      return { product: await store.insert(newId("prd"), fieldsOf(product as Product)) };
    },

    async getProduct({ productId }) {
      check().id("product_id", productId).throwIfAny();
      return { product: await store.get(productId) };
    },

    async listProducts(request, ctx) {
      const { inStockOnly } = request;
      const page = requestedPage(check(), ctx, request, { inStockOnly });
      const { products, nextSeq } = await store.list(page.limit, page.after, page.bytes, {
        inStockOnly,
      });
      return { products, nextPageToken: page.tokenAfter(nextSeq) };
    },

    async updateProduct({ product, updateMask }) {
      const v = check();
      const paths = updateMask ?? [];
      if (!product) v.add("product", "is required");
      else v.id("product.product_id", product.productId);
      v.mask(paths, MUTABLE);
      if (product) checkProduct(v, product, paths);
      v.throwIfAny();
      const fields = fieldsOf(product as Product);
      return {
        product: await store.update((product as Product).productId, {
          ...(paths.includes("name") && { name: fields.name }),
          ...(paths.includes("description") && { description: fields.description }),
          ...(paths.includes("price") && {
            currencyCode: fields.currencyCode,
            priceMinor: fields.priceMinor,
          }),
          ...(paths.includes("stock_quantity") && { stockQuantity: fields.stockQuantity }),
        }),
      };
    },
  };
}
