// The profiles, as real service processes: production refuses to start with anything the
// development setup provides (plaintext, the built-in page-token secret, the development CA and
// JWT key, implicit JWT settings) and starts with credentials of its own; development refuses
// plaintext anywhere but loopback.
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { createClient } from "../../kit/client/index.js";
import { Code } from "../../kit/errors.js";
import { bearer } from "../../kit/middleware/auth.js";
import { defaultClientMiddleware } from "../../kit/middleware/index.js";
import { PRODUCTION_ISSUER } from "../../kit/security/security.js";
import { channelCredentials, readTls } from "../../kit/security/tls.js";
import { identityFiles, makeCredentials, signToken } from "../../scripts/lib/credentials.js";
import {
  LaunchError,
  spawnService,
  stopProcess,
  waitReported,
} from "../../scripts/lib/launcher.js";
import { freePorts } from "../../scripts/lib/ports.js";
import { compiled } from "../helpers/build.js";
import { ADMIN_TOKEN, CERTS } from "../helpers/credentials.js";
import { expectStatus } from "../helpers/status.js";

let own: string;
let dataDir: string;

test.before(async () => {
  own = await mkdtemp(path.join(tmpdir(), "shopmesh-production-"));
  dataDir = await mkdtemp(path.join(tmpdir(), "shopmesh-profiles-"));
  // What `npm run certs -- --production` makes: a CA and a JWT key of the mesh's own.
  await makeCredentials(own, {
    caName: "shopmesh mesh CA",
    keyIdPrefix: "shopmesh-",
    identities: ["product", "cli"],
    pageTokenSecret: true,
  });
  // A CA rollover's bundle, with the development CA second.
  await writeFile(
    path.join(own, "ca-and-development-ca.crt"),
    Buffer.concat([
      await readFile(identityFiles(own, "product").ca),
      await readFile(identityFiles(CERTS, "product").ca),
    ]),
  );
});

test.after.always(async () => {
  await rm(own, { recursive: true, force: true });
  await rm(dataDir, { recursive: true, force: true });
});

/** The production settings with the mesh's own credentials, less or more what a case says. */
const production = (dir = own): Record<string, string> => ({
  SHOP_PROFILE: "production",
  SHOP_TLS_CERT_FILE: identityFiles(dir, "product").cert,
  SHOP_TLS_KEY_FILE: identityFiles(dir, "product").key,
  SHOP_TLS_CA_FILE: identityFiles(dir, "product").ca,
  SHOP_JWKS_FILE: path.join(own, "jwks.json"),
  SHOP_JWT_ISSUER: PRODUCTION_ISSUER,
  SHOP_JWT_AUDIENCE: "shopmesh",
  SHOP_PAGE_TOKEN_SECRET_FILE: path.join(own, "page-token.secret"),
});

/** Starts the product service with `env`; resolves with its process once it serves. */
async function startProduct(env: Record<string, string>, host = "127.0.0.1") {
  const [port] = (await freePorts(1)) as [number];
  const proc = spawnService(
    {
      name: `product-${port}`,
      service: "product",
      host,
      port,
      env: { SHOP_DATABASE: ":memory:", SHOP_LOG_LEVEL: "warn", ...env },
      ...(await compiled()),
    },
    dataDir,
  );
  return { proc, port, serving: waitReported(proc, 30_000) };
}

const refusals: [string, () => Record<string, string>, RegExp, string?][] = [
  [
    "plaintext",
    () => without(production(), "SHOP_TLS_CERT_FILE", "SHOP_TLS_KEY_FILE", "SHOP_TLS_CA_FILE"),
    /needs TLS/,
  ],
  [
    "the built-in page-token secret",
    () => without(production(), "SHOP_PAGE_TOKEN_SECRET_FILE"),
    /page-token secret/,
  ],
  [
    "a short page-token secret",
    () => ({ ...production(), SHOP_PAGE_TOKEN_SECRET: "short" }),
    /page-token secret/,
  ],
  [
    "a page-token secret of blanks",
    () => ({ ...production(), SHOP_PAGE_TOKEN_SECRET: " ".repeat(40) }),
    /page-token secret/,
  ],
  ["the development CA", () => production(CERTS), /development CA/],
  [
    "the development CA beside the mesh's own in the CA bundle",
    () => ({ ...production(), SHOP_TLS_CA_FILE: path.join(own, "ca-and-development-ca.crt") }),
    /development CA/,
  ],
  [
    "the development JWT key",
    () => ({ ...production(), SHOP_JWKS_FILE: path.join(CERTS, "jwks.json") }),
    /development JWT key/,
  ],
  [
    "a PostgreSQL server off this host, its URL silent on TLS",
    () => ({ ...production(), SHOP_DATABASE_URL: "postgres://shop:secret@db.invalid:5432/shop" }),
    /reaches PostgreSQL at db\.invalid over TLS only: add sslmode=verify-full/,
  ],
  ["no explicit JWKS", () => without(production(), "SHOP_JWKS_FILE"), /needs SHOP_JWKS_FILE/],
  ["no explicit issuer", () => without(production(), "SHOP_JWT_ISSUER"), /needs SHOP_JWT_ISSUER/],
  ["a blank issuer", () => ({ ...production(), SHOP_JWT_ISSUER: "  " }), /needs SHOP_JWT_ISSUER/],
  [
    "development plaintext off loopback",
    () => ({ SHOP_PROFILE: "development" }),
    /loopback only/,
    "0.0.0.0",
  ],
];

function without(env: Record<string, string>, ...names: string[]) {
  const copy = { ...env };
  for (const name of names) delete copy[name];
  return copy;
}

test("the production profile refuses development secrets and plaintext; development refuses plaintext off loopback", async (t) => {
  await Promise.all(
    refusals.map(async ([what, env, message, host]) => {
      const { proc, serving } = await startProduct(env(), host);
      try {
        const error = await t.throwsAsync(serving, { instanceOf: LaunchError }, what);
        t.regex(error?.message ?? "", message, what);
      } finally {
        await stopProcess(proc, 2_000);
      }
    }),
  );
});

test("the production profile serves with credentials of its own, and only their tokens", async (t) => {
  const { proc, port, serving } = await startProduct(production());
  t.teardown(() => stopProcess(proc, 5_000));
  await serving;
  const client = (token: string) =>
    createClient(ProductServiceService, `127.0.0.1:${port}`, {
      middleware: [...defaultClientMiddleware({ defaultTimeoutMs: 10_000 }), bearer(token)],
      transport: channelCredentials(readTls(identityFiles(own, "cli")), "product"),
    });
  const admin = client(
    await signToken({
      user: "admin",
      roles: ["admin"],
      keyFile: path.join(own, "jwt.key"),
      jwksFile: path.join(own, "jwks.json"),
      issuer: PRODUCTION_ISSUER,
    }),
  );
  const development = client(ADMIN_TOKEN);
  t.teardown(() => {
    admin.close();
    development.close();
  });
  const { product } = await admin.createProduct({
    product: { name: "Mug", price: { currencyCode: "EUR", amountMinor: "900" }, stockQuantity: 1 },
  });
  t.is(product?.stockQuantity, 1);
  // A token signed with the development key means nothing here.
  await expectStatus(t, development.listProducts({}), Code.UNAUTHENTICATED, "TOKEN_INVALID");
});
