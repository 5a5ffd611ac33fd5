// The one seeder: users and products made through the public rpcs, for the demo data of
// `npm start` and `npm run mesh`, the benchmark's catalogue and the tests' fixtures.
import type { Product, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { ProductServiceService as ProductService } from "../../gen/ts/shop/product/v1/product.js";
import type { User, UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { UserServiceService as UserService } from "../../gen/ts/shop/user/v1/user.js";
import { type Client, createClient } from "../../kit/client/index.js";
import { bearer } from "../../kit/middleware/auth.js";
import { defaultClientMiddleware } from "../../kit/middleware/index.js";
import type { channelCredentials } from "../../kit/security/tls.js";

/** How the seeder signs in: an admin's token, and mutual TLS when the services run it. */
export interface SeedAccess {
  token: string;
  transport?: ReturnType<typeof channelCredentials>;
}

export const DEMO_EMAIL = "demo@shopmesh.dev";

const CATALOGUE = [
  { name: "Espresso cup", description: "Porcelain, 80 ml", amountMinor: "900", stock: 40 },
  { name: "Pour-over kettle", description: "Gooseneck, 1 l", amountMinor: "4900", stock: 12 },
  { name: "Hand grinder", description: "Ceramic burrs", amountMinor: "3450", stock: 8 },
];

let serial = 0;

/** A new user; its email is unique to this call unless one is given. */
export async function addUser(
  users: Client<typeof UserServiceService>,
  fields: { email?: string; displayName?: string } = {},
): Promise<User> {
  serial++;
  const { user } = await users.createUser({
    user: {
      email: fields.email ?? `shopper${serial}.${process.pid}.${Date.now()}@example.com`,
      displayName: fields.displayName ?? `Shopper ${serial}`,
    },
  });
  return user as User;
}

/** A new product, EUR 10.00 with 10 in stock unless told otherwise. */
export async function addProduct(
  products: Client<typeof ProductServiceService>,
  fields: {
    name?: string;
    description?: string;
    amountMinor?: string;
    currencyCode?: string;
    stock?: number;
  } = {},
): Promise<Product> {
  const { product } = await products.createProduct({
    product: {
      name: fields.name ?? "Test mug",
      description: fields.description ?? "",
      price: {
        currencyCode: fields.currencyCode ?? "EUR",
        amountMinor: fields.amountMinor ?? "1000",
      },
      stockQuantity: fields.stock ?? 10,
    },
  });
  return product as Product;
}

/** Clients of the seeded services at `addresses` (one address, or a comma-separated list). */
export function seedClients(addresses: { user: string; product: string }, access: SeedAccess) {
  const options = (service: string) => ({
    middleware: [...defaultClientMiddleware({ defaultTimeoutMs: 5_000 }), bearer(access.token)],
    ...(access.transport && {
      transport: {
        ...access.transport,
        // The mesh certificates name their service: check the one each client dials.
        options: { ...access.transport.options, "grpc.ssl_target_name_override": service },
      },
    }),
  });
  const users = createClient(UserService, addresses.user, options("user"));
  const products = createClient(ProductService, addresses.product, options("product"));
  return {
    users,
    products,
    close() {
      users.close();
      products.close();
    },
  };
}

export interface DemoData {
  userId?: string;
  productIds: string[];
}

/**
 * On an empty store (and when `seed` is set), adds a demo user and a small catalogue. Returns the
 * demo ids either way, for the ready banner.
 */
export async function seedDemo(
  addresses: { user: string; product: string },
  seed: boolean,
  access: SeedAccess,
): Promise<DemoData> {
  const { users, products, close } = seedClients(addresses, access);
  try {
    const existing = await users.listUsers({ pageSize: 1 });
    if (seed && existing.users.length === 0) {
      await addUser(users, { email: DEMO_EMAIL, displayName: "Demo Shopper" });
      for (const item of CATALOGUE) await addProduct(products, item);
    }
    const firstUsers = await users.listUsers({ pageSize: 1 });
    // A page of in-stock products may be short, even empty, where most are sold out: read on.
    const productIds: string[] = [];
    let pageToken = "";
    do {
      const page = await products.listProducts({ pageSize: 3, pageToken, inStockOnly: true });
      productIds.push(...page.products.map((product) => product.productId));
      pageToken = page.nextPageToken;
    } while (productIds.length < 3 && pageToken !== "");
    return {
      ...(firstUsers.users[0] && { userId: firstUsers.users[0].userId }),
      productIds: productIds.slice(0, 3),
    };
  } finally {
    close();
  }
}

/**
 * The benchmark's data: a user, the product every order buys (a billion units outlasts any run),
 * and enough other products for a page of 50.
 */
export async function seedBench(
  addresses: { user: string; product: string },
  access: SeedAccess,
): Promise<{ userId: string; productId: string }> {
  const { users, products, close } = seedClients(addresses, access);
  try {
    const user = await addUser(users, {
      email: "bench@shopmesh.dev",
      displayName: "Bench Shopper",
    });
    const item = { description: "benchmark item", amountMinor: "1250" };
    const product = await addProduct(products, { ...item, name: "Bench item", stock: 1e9 });
    for (let i = 1; i < 60; i++) {
      await addProduct(products, { ...item, name: `Filler item ${i}`, stock: 100 });
    }
    return { userId: user.userId, productId: product.productId };
  } finally {
    close();
  }
}
