// Seeds the demo data through SHOP_USER_ADDR and SHOP_PRODUCT_ADDR unless SHOP_SEED=false, then
// prints the demo ids: compose's one-shot `seed` service.
//
//   SHOP_USER_ADDR=user:50051 SHOP_PRODUCT_ADDR=product:50052 node --import tsx scripts/seed.ts
import { env } from "../kit/config.js";
import { serviceVariable } from "../kit/registry.js";
import { registry } from "../services/registry.js";
import { seedDemo } from "./lib/seed.js";

const address = (name: string) =>
  env.string(serviceVariable(name, "ADDR"), `127.0.0.1:${registry.get(name).port}`);

try {
  const demo = await seedDemo(
    { user: address("user"), product: address("product") },
    env.bool("SHOP_SEED", true),
  );
  console.log(JSON.stringify({ user_id: demo.userId ?? null, product_ids: demo.productIds }));
} catch (error) {
  console.error(`seed: ${error instanceof Error ? error.message : error}`);
  process.exitCode = 1;
}
