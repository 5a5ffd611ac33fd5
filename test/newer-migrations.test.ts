import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { pino } from "pino";
import { type Knex, type Migration, openDatabase } from "../kit/db/index.js";
import { registry } from "../services/registry.js";
import { compiledEntry, serviceProcess } from "./helpers/build.js";
import { eventually } from "./helpers/eventually.js";
import { exec, grpcurl } from "./helpers/exec.js";
import { onPostgres, opening, openingIn, postgres } from "./helpers/storage.js";

const { migrations } = registry.get("product");

/** A migration only a newer build has: one more table, as a new field would add a column. */
const newer: Migration = {
  name: "9001_from_a_newer_build",
  up: (db) => db.schema.createTable("newer_build_notes", (table) => table.text("note")),
  down: (db) => db.schema.dropTable("newer_build_notes"),
};

let databases = 0;

/** Where a product database lives for one test, and the SHOP_* settings that point at it. */
async function emptyDatabase(
  t: ExecutionContext,
): Promise<{ location: string; env: Record<string, string> }> {
  if (onPostgres()) {
    const pg = await postgres();
    const name = `newer_migrations_${++databases}`;
    await pg.createDatabase(name);
    return { location: pg.url(name), env: { SHOP_DATABASE_URL: pg.url(name) } };
  }
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-newer-migrations-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const location = path.join(dir, "product.sqlite");
  return { location, env: { SHOP_DATABASE: location } };
}

/**
 * Migrated by a newer build that has every migration of this one but its last (which this one
 * must still run) and one this one lacks.
 */
async function migratedByANewerBuild(location: string) {
  const db = await openDatabase(location, [...migrations.slice(0, -1), newer], {
    schema: "product",
  });
  await db.destroy();
}

const applied = async (db: Knex) =>
  (await db("knex_migrations").orderBy("id").select("name")).map((row) => row.name as string);

test.serial("openDatabase runs its own missing migrations and keeps a newer build's", async (t) => {
  const { location } = await emptyDatabase(t);
  await migratedByANewerBuild(location);
  const warnings: string[] = [];
  const logger = pino({ level: "warn" }, { write: (line) => warnings.push(JSON.parse(line).msg) });
  const db = opening(await openDatabase(location, migrations, { schema: "product", logger }));
  t.teardown(() => db.destroy());
  t.deepEqual(
    (await applied(db)).sort(),
    [...migrations.map((migration) => migration.name), newer.name].sort(),
  );
  t.true(await db.schema.hasTable("newer_build_notes"));
  t.deepEqual(warnings, [
    "the database has migrations this build does not know, from a newer one: 9001_from_a_newer_build",
  ]);
});

/** Runs a product service on `env` until the test ends; resolves with it and its stdout. */
async function startProduct(t: ExecutionContext, env: Record<string, string>) {
  const child = await serviceProcess(t, {
    SHOP_SERVICE: "product",
    SHOP_PORT: "0",
    SHOP_METRICS: "false",
    ...env,
  });
  const output = { stdout: "", stderr: "" };
  child.stdout?.on("data", (chunk) => {
    output.stdout += chunk;
  });
  child.stderr?.on("data", (chunk) => {
    output.stderr += chunk;
  });
  return output;
}

const lines = (text: string) =>
  text
    .split("\n")
    .filter(Boolean)
    .map((line) => JSON.parse(line) as { msg: string; address?: string; unknown?: string[] });

test.serial(
  "a product service starts and serves on a database a newer build migrated",
  async (t) => {
    const { location, env } = await emptyDatabase(t);
    if (onPostgres()) openingIn(location);
    await migratedByANewerBuild(location);
    const output = await startProduct(t, env);
    const address = await eventually(
      "the product service serving",
      () => lines(output.stdout).find((line) => line.msg === "serving")?.address,
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    t.is(output.stderr, "");
    const reply = await grpcurl(address, "shop.product.v1.ProductService/ListProducts", {});
    t.deepEqual(reply, {});
    t.deepEqual(
      lines(output.stdout)
        .filter((line) => line.unknown)
        .map((line) => line.unknown),
      [[newer.name]],
    );
  },
);

test.serial("scripts/migrate.ts migrates a database a newer build migrated", async (t) => {
  const { location, env } = await emptyDatabase(t);
  await migratedByANewerBuild(location);
  const run = await exec(process.execPath, [await compiledEntry("scripts/migrate.ts")], {
    env: { SHOP_SERVICE: "product", ...env },
    timeoutMs: 30_000,
  });
  t.is(run.code, 0, run.stderr);
  t.regex(run.stdout, /product: .* is migrated/);
  t.is(
    run.stderr.trim(),
    "warning: the database has migrations this build does not know, from a newer one: 9001_from_a_newer_build",
  );
});
