// What only PostgreSQL has: a schema per service, migrations that replicas may run at once, the
// pool size and statement timeout settings as the server sees them, TLS to the server, and the
// SHOP_DATABASE_URL settings as a service process reads them.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { connectDatabase, openDatabase } from "../../kit/db/index.js";
import { Code } from "../../kit/errors.js";
import { startService } from "../../kit/runtime/index.js";
import { privateTempDir, startLocalPostgres } from "../../scripts/lib/postgres.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import { registry } from "../../services/registry.js";
import { userService } from "../../services/user/service.js";
import { compiledEntry } from "../helpers/build.js";
import { signedInClient } from "../helpers/credentials.js";
import { until } from "../helpers/eventually.js";
import { exec } from "../helpers/exec.js";
import { startFleet, startProcessFleet } from "../helpers/fleet.js";
import { freshDatabase, postgres, useStorage } from "../helpers/storage.js";

useStorage("postgres");

/** A connection to `url` for the test to look around with, closed when the test ends. */
function look(t: { teardown(fn: () => Promise<void>): void }, url: string, schema = "public") {
  const db = connectDatabase(url, {
    schema,
    poolMax: 2,
    statementTimeoutMs: 0,
    applicationName: "shopmesh test",
  });
  t.teardown(() => db.destroy());
  return db;
}

const rowsOf = async <T>(query: PromiseLike<unknown>) => ((await query) as { rows: T[] }).rows;

test("each service keeps its tables in a schema named after it and sees no other's", async (t) => {
  const fleet = await startFleet(t);
  await addUser(fleet.users);
  const url = String(fleet.user.db.client.config.connection.connectionString);
  const tables = await rowsOf<{ table_schema: string; table_name: string }>(
    look(t, url).raw(
      `select table_schema, table_name from information_schema.tables
       where table_schema in ('user', 'product', 'order') and table_name not like 'knex%'
       order by 1, 2`,
    ),
  );
  t.deepEqual(
    tables.map((row) => `${row.table_schema}.${row.table_name}`),
    [
      "order.order_lines",
      "order.orders",
      "product.products",
      "product.reservation_lines",
      "product.reservations",
      "user.users",
    ],
  );
  // A service's connections find only its own schema's tables.
  await t.throwsAsync(fleet.user.db("products").select(), { message: /"products" does not exist/ });
  await t.throwsAsync(fleet.order.db("users").select(), { message: /"users" does not exist/ });
  t.is((await fleet.user.db("users").select()).length, 1);
});

test("replicas that start together on a new database migrate it once", async (t) => {
  const pg = await postgres();
  await pg.createDatabase("fresh_migrations");
  const url = pg.url("fresh_migrations");
  const { migrations } = registry.get("product");
  const opened = await Promise.all(
    Array.from({ length: 4 }, () => openDatabase(url, migrations, { schema: "product" })),
  );
  for (const db of opened) await db.destroy();
  const applied = await look(t, url, "product")("knex_migrations").select("name");
  t.deepEqual(
    applied.map((row) => row.name),
    migrations.map((migration) => migration.name),
  );
});

test("SHOP_DATABASE_POOL_MAX caps each process's connections, and SHOP_DATABASE_STATEMENT_TIMEOUT_MS makes a stuck write UNAVAILABLE", async (t) => {
  const fleet = await startProcessFleet(t, {
    env: { SHOP_DATABASE_POOL_MAX: "2", SHOP_DATABASE_STATEMENT_TIMEOUT_MS: "1500" },
  });
  const mug = await addProduct(fleet.products, { stock: 5 });
  const admin = look(t, fleet.database("product"), "product");
  const restock = (stockQuantity: number) =>
    fleet.products.updateProduct(
      { product: { productId: mug.productId, stockQuantity }, updateMask: ["stock_quantity"] },
      { timeoutMs: 10_000 },
    );
  const connections = async () =>
    Number(
      (
        await rowsOf<{ n: string }>(
          admin.raw(
            "select count(*) as n from pg_stat_activity where application_name like 'shopmesh product%' and datname = current_database()",
          ),
        )
      )[0]?.n,
    );

  // The test holds the product's row: every write to it waits, on the one connection of the two
  // that is not kept for reads, or for it. A read goes on, on the other.
  const trx = await admin.transaction();
  await trx("products").where({ product_id: mug.productId }).forUpdate().select();
  const waiting = Array.from({ length: 6 }, (_, i) => restock(10 + i).then(() => "OK"));
  await until("a write waits on the row", async () => (await connections()) >= 1);
  const read = await fleet.products.getProduct({ productId: mug.productId });
  t.is(read.product?.stockQuantity, 5);
  t.is(await connections(), 2, "no more connections than SHOP_DATABASE_POOL_MAX");
  // Held past the statement timeout, the writes that waited on the row give up, and say retry.
  const outcomes = await Promise.all(
    waiting.map((call) =>
      call.catch((error) => `${Code[error.code]} ${error.details?.reason ?? ""}`),
    ),
  );
  await trx.rollback();
  t.true(
    outcomes.includes("UNAVAILABLE DATABASE_BUSY"),
    `some write timed out: ${JSON.stringify(outcomes)}`,
  );
  t.true(
    outcomes.every((outcome) => ["OK", "UNAVAILABLE DATABASE_BUSY"].includes(outcome)),
    JSON.stringify(outcomes),
  );
  // Nothing of a write that timed out stays, and the service serves on.
  await restock(42);
  t.is((await fleet.products.getProduct({ productId: mug.productId })).product?.stockQuantity, 42);
});

test("a service reaches a TLS-only server with sslmode=verify-full, and never without TLS", async (t) => {
  const dir = await privateTempDir();
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const server = await startLocalPostgres({
    dir: path.join(dir, "cluster"),
    throwaway: true,
    tls: true,
  });
  t.teardown(() => server.stop());
  const ca = path.join(server.dir, "server.crt");
  const secure = `${server.url()}?sslmode=verify-full&sslrootcert=${ca}`;

  const user = await startService(userService, {
    host: "127.0.0.1",
    port: 0,
    database: secure,
    logLevel: "silent",
  });
  t.teardown(() => user.stop());
  const users = signedInClient(UserServiceService, user.server.address);
  t.teardown(() => users.close());
  t.truthy((await addUser(users)).userId);
  const ssl = await rowsOf<{ ssl: boolean }>(
    user.db.raw("select ssl from pg_stat_ssl where pid = pg_backend_pid()"),
  );
  t.deepEqual(ssl, [{ ssl: true }]);

  // Plaintext finds no pg_hba.conf entry; a certificate no trusted CA signed is refused.
  const migrations = registry.get("user").migrations;
  await t.throwsAsync(
    openDatabase(`${server.url()}?sslmode=disable`, migrations, { schema: "user" }),
    { message: /no encryption|pg_hba/ },
  );
  await t.throwsAsync(
    openDatabase(`${server.url()}?sslmode=verify-full`, migrations, { schema: "user" }),
    { message: /self.signed|certificate/ },
  );
});

test("a process takes SHOP_USER_DATABASE_URL over SHOP_DATABASE_URL, and refuses a URL that is not PostgreSQL's", async (t) => {
  const shared = await freshDatabase();
  const own = await freshDatabase();
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-url-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // scripts/migrate.ts reads the settings as a service process does, migrates, and exits.
  const run = async (env: Record<string, string>) =>
    exec(process.execPath, [await compiledEntry("scripts/migrate.ts")], {
      env: { SHOP_SERVICE: "user", SHOP_DATA_DIR: dir, ...env },
      timeoutMs: 30_000,
    });

  const refused = await run({ SHOP_DATABASE_URL: "mysql://localhost/shop" });
  t.is(refused.code, 1);
  t.regex(refused.stderr, /SHOP_DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL/);

  // The schema is dropped from both, so that only the database the service opens gets it back.
  await look(t, shared).raw('drop schema "user" cascade');
  await look(t, own).raw('drop schema "user" cascade');
  const migrated = await run({ SHOP_DATABASE_URL: shared, SHOP_USER_DATABASE_URL: own });
  t.is(migrated.code, 0, migrated.stderr);
  t.regex(migrated.stdout, /user: postgres:\/\/postgres@127\.0\.0\.1:\d+\/shop_\d+ is migrated/);
  const hasSchema = async (url: string) =>
    (await rowsOf(look(t, url).raw("select 1 from pg_namespace where nspname = 'user'"))).length;
  t.is(await hasSchema(own), 1, "SHOP_USER_DATABASE_URL got the service's schema");
  t.is(await hasSchema(shared), 0, "SHOP_DATABASE_URL did not");
});
