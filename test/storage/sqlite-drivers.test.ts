// SQLite's two drivers: better-sqlite3 (the default) and sqlite3 (node-sqlite3, the driver the
// project was specified with), chosen by SHOP_SQLITE_DRIVER. Both read and write the same files
// the same way; the handler suites run on each (services/handlers.sqlite3.test.ts).
import { readFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import {
  isBusy,
  isCheckViolation,
  isUniqueViolation,
  openDatabase,
  readInteger,
  type SqliteDriver,
} from "../../kit/db/index.js";
import { registry } from "../../services/registry.js";
import { compiledEntry } from "../helpers/build.js";
import { exec } from "../helpers/exec.js";
import { childPids, launch } from "../helpers/launch.js";

const DRIVERS: SqliteDriver[] = ["better-sqlite3", "sqlite3"];
const MAX = "9007199254740991";

const tempDir = async (t: { teardown(fn: () => Promise<void>): void }) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-drivers-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
};

const product = (id: string, stock: number) => ({
  product_id: id,
  name: "Mug",
  description: "",
  currency_code: "EUR",
  price_minor: MAX,
  stock_quantity: stock,
  create_time: 1,
  update_time: 1,
});

test("both drivers share one file, keep integers exact and report constraints alike", async (t) => {
  const file = path.join(await tempDir(t), "product.sqlite");
  const { migrations } = registry.get("product");
  for (const [i, driver] of DRIVERS.entries()) {
    const db = await openDatabase(file, migrations, { sqliteDriver: driver });
    t.teardown(() => db.destroy());
    t.is(db.client.driverName, driver);
    await db("products").insert(product(`prd_${driver}`, 5));
    // What the other driver wrote, and the largest amount, read back exactly.
    const prices = await db("products").orderBy("seq").select("product_id", "price_minor");
    t.deepEqual(
      prices.map((row) => [row.product_id, readInteger(row.price_minor)]),
      DRIVERS.slice(0, i + 1).map((d) => [`prd_${d}`, BigInt(MAX)]),
    );
    // better-sqlite3's errors are not instances of this realm's Error: hence `any`.
    const duplicate = await t.throwsAsync(db("products").insert(product(`prd_${driver}`, 5)), {
      any: true,
    });
    t.true(isUniqueViolation(duplicate), `${driver}: ${String(duplicate)}`);
    t.false(isCheckViolation(duplicate));
    const negative = await t.throwsAsync(db("products").insert(product(`prd_${driver}_2`, -1)), {
      any: true,
    });
    t.true(isCheckViolation(negative), `${driver}: ${String(negative)}`);
    t.false(isUniqueViolation(negative) || isBusy(negative));
  }
});

test("a write that finds the file locked past the busy timeout is busy, on both drivers", async (t) => {
  const dir = await tempDir(t);
  const { migrations } = registry.get("user");
  for (const driver of DRIVERS) {
    // Two connections of one driver, as two replicas would hold: each copy of SQLite keeps its
    // own account of the file's locks, so the holder uses the same driver.
    const file = path.join(dir, `${driver}.sqlite`);
    const holder = await openDatabase(file, migrations, { sqliteDriver: driver });
    t.teardown(() => holder.destroy());
    const db = await openDatabase(file, migrations, { sqliteDriver: driver });
    t.teardown(() => db.destroy());
    await holder.raw("BEGIN IMMEDIATE");
    // The pragma is per connection; a short wait keeps the test short.
    await db.raw("PRAGMA busy_timeout = 50");
    const error = await t.throwsAsync(
      db("users").insert({
        user_id: "usr_1",
        email: "a@example.com",
        email_key: "a@example.com",
        display_name: "A",
        create_time: 1,
        update_time: 1,
      }),
      { any: true },
    );
    await holder.raw("ROLLBACK");
    t.true(isBusy(error), `${driver}: ${String(error)}`);
  }
});

test("SHOP_SQLITE_DRIVER=sqlite3 runs every service process on node-sqlite3", async (t) => {
  const shop = await launch(t, "start", {
    args: ["--no-seed"],
    env: { SHOP_SQLITE_DRIVER: "sqlite3" },
  });
  t.regex(shop.banner, /^ {2}data \S+ \(SQLite, sqlite3\)/m);
  const pids = childPids(shop.child.pid as number);
  t.is(pids.length, registry.names.length);
  for (const pid of pids) {
    // The native addons a process has loaded are in its memory map.
    const maps = readFileSync(`/proc/${pid}/maps`, "utf8");
    t.true(maps.includes("node_sqlite3.node"), `process ${pid} loaded node-sqlite3`);
    t.false(maps.includes("better_sqlite3.node"), `process ${pid} did not load better-sqlite3`);
  }
});

test("an unknown SHOP_SQLITE_DRIVER stops a process before it opens anything", async (t) => {
  const dir = await tempDir(t);
  const run = await exec(process.execPath, [await compiledEntry("scripts/migrate.ts")], {
    env: { SHOP_SERVICE: "user", SHOP_DATA_DIR: dir, SHOP_SQLITE_DRIVER: "sqlite" },
  });
  t.is(run.code, 1);
  t.regex(run.stderr, /SHOP_SQLITE_DRIVER must be one of better-sqlite3, sqlite3, got "sqlite"/);
});
