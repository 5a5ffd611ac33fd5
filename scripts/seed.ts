// Seeds the demo data through SHOP_USER_ADDR and SHOP_PRODUCT_ADDR unless SHOP_SEED=false, then
// prints the demo ids: compose's one-shot `seed` service. It signs in as an admin with a token it
// signs itself (SHOP_JWT_SIGNING_KEY_FILE, SHOP_JWKS_FILE for the key's id, SHOP_JWT_ISSUER,
// SHOP_JWT_AUDIENCE; the development key by default), over mutual TLS when SHOP_TLS_* name its
// identity.
//
//   SHOP_USER_ADDR=user:50051 SHOP_PRODUCT_ADDR=product:50052 node --import tsx scripts/seed.ts
import { env } from "../kit/config.js";
import { serviceVariable } from "../kit/registry.js";
import {
  DEV_AUDIENCE,
  DEV_CERTS_DIR,
  DEV_ISSUER,
  tlsFilesFromEnv,
} from "../kit/security/security.js";
import { channelCredentials, readTls } from "../kit/security/tls.js";
import { registry } from "../services/registry.js";
import { LAUNCH_ADMIN, signToken } from "./lib/credentials.js";
import { seedDemo } from "./lib/seed.js";

const address = (name: string) =>
  env.string(serviceVariable(name, "ADDR"), `127.0.0.1:${registry.get(name).port}`);

try {
  const token = await signToken({
    user: LAUNCH_ADMIN,
    roles: ["admin"],
    ttlSeconds: 600,
    keyFile: env.string("SHOP_JWT_SIGNING_KEY_FILE", `${DEV_CERTS_DIR}/jwt.key`),
    jwksFile: env.string("SHOP_JWKS_FILE", `${DEV_CERTS_DIR}/jwks.json`),
    issuer: env.string("SHOP_JWT_ISSUER", DEV_ISSUER),
    audience: env.string("SHOP_JWT_AUDIENCE", DEV_AUDIENCE),
  });
  const tls = tlsFilesFromEnv();
  const demo = await seedDemo(
    { user: address("user"), product: address("product") },
    env.bool("SHOP_SEED", true),
    { token, ...(tls && { transport: channelCredentials(readTls(tls)) }) },
  );
  console.log(JSON.stringify({ user_id: demo.userId ?? null, product_ids: demo.productIds }));
} catch (error) {
  console.error(`seed: ${error instanceof Error ? error.message : error}`);
  process.exitCode = 1;
}
