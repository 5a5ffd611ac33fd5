import path from "node:path";
import { pathToFileURL } from "node:url";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { createClient } from "../../kit/client.js";
import { env } from "../../kit/config.js";

export const DEMO_EMAIL = "demo@shopmesh.dev";

const CATALOGUE = [
  { name: "Espresso cup", description: "Porcelain, 80 ml", amountMinor: "900", stock: 40 },
  { name: "Pour-over kettle", description: "Gooseneck, 1 l", amountMinor: "4900", stock: 12 },
  { name: "Hand grinder", description: "Ceramic burrs", amountMinor: "3450", stock: 8 },
];

export interface DemoData {
  userId?: string;
  productIds: string[];
}

/**
 * On an empty store, adds a demo user and a small catalogue through the public RPCs. Returns the
 * demo ids either way, for the ready banner.
 */
export async function seedDemo(
  userAddr: string,
  productAddr: string,
  seed: boolean,
): Promise<DemoData> {
  const users = createClient(UserServiceService, userAddr, {
    serviceName: "shop.user.v1.UserService",
  });
  const products = createClient(ProductServiceService, productAddr, {
    serviceName: "shop.product.v1.ProductService",
  });
  try {
    const existing = await users.listUsers({ pageSize: 1, pageToken: "" });
    if (seed && existing.users.length === 0) {
      await users.createUser({
        user: {
          userId: "",
          email: DEMO_EMAIL,
          displayName: "Demo Shopper",
          createTime: undefined,
          updateTime: undefined,
        },
      });
      for (const item of CATALOGUE) {
        await products.createProduct({
          product: {
            productId: "",
            name: item.name,
            description: item.description,
            price: { currencyCode: "EUR", amountMinor: item.amountMinor },
            stockQuantity: item.stock,
            createTime: undefined,
            updateTime: undefined,
          },
        });
      }
    }
    const [firstUsers, firstProducts] = await Promise.all([
      users.listUsers({ pageSize: 1, pageToken: "" }),
      products.listProducts({ pageSize: 3, pageToken: "", inStockOnly: true }),
    ]);
    return {
      ...(firstUsers.users[0] && { userId: firstUsers.users[0].userId }),
      productIds: firstProducts.products.map((product) => product.productId),
    };
  } finally {
    users.close();
    products.close();
  }
}

// As a command (compose's one-shot `seed` service): seed through SHOP_USER_ADDR and
// SHOP_PRODUCT_ADDR unless SHOP_SEED=false, then print the demo ids.
if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  try {
    const demo = await seedDemo(
      env.string("SHOP_USER_ADDR", "127.0.0.1:50051"),
      env.string("SHOP_PRODUCT_ADDR", "127.0.0.1:50052"),
      env.bool("SHOP_SEED", true),
    );
    console.log(JSON.stringify({ user_id: demo.userId ?? null, product_ids: demo.productIds }));
  } catch (error) {
    console.error(`seed: ${error instanceof Error ? error.message : error}`);
    process.exitCode = 1;
  }
}
