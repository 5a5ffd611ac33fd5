import test from "ava";
import { type Knex, openDatabase } from "./index.js";
import { itemsMigrations as migrations } from "./items.fixture.js";

/** Counts the statements the service's one connection prepares. */
async function countPrepares(db: Knex): Promise<{ count: number }> {
  const client = db.client as {
    acquireConnection(): Promise<{ prepare(sql: string): unknown }>;
    releaseConnection(connection: unknown): Promise<void>;
  };
  const connection = await client.acquireConnection();
  const counter = { count: 0 };
  const prepare = connection.prepare.bind(connection);
  connection.prepare = (sql: string) => {
    counter.count++;
    return prepare(sql);
  };
  await client.releaseConnection(connection);
  return counter;
}

test("a query run again reuses its prepared statement, with the new bindings", async (t) => {
  const db = await openDatabase(":memory:", migrations);
  t.teardown(() => db.destroy());
  await db("items").insert([
    { id: 1, name: "mug" },
    { id: 2, name: "tea" },
  ]);
  const prepares = await countPrepares(db);
  t.deepEqual(await db("items").where({ id: 1 }).first(), { id: 1, name: "mug" });
  t.deepEqual(await db("items").where({ id: 2 }).first(), { id: 2, name: "tea" });
  t.is(await db("items").where({ id: 3 }).first(), undefined);
  t.is(await db("items").where({ id: 1 }).update({ name: "cup" }), 1);
  t.is(await db("items").where({ id: 9 }).update({ name: "cup" }), 0);
  t.deepEqual(await db("items").where({ id: 2 }).update({ name: "pot" }, ["name"]), [
    { name: "pot" },
  ]);
  // One select, one update, one update … returning: three statements for six queries.
  t.is(prepares.count, 3);
});

test("more distinct statements than the cache keeps still run correctly", async (t) => {
  const db = await openDatabase(":memory:", migrations);
  t.teardown(() => db.destroy());
  await db("items").insert(Array.from({ length: 300 }, (_, i) => ({ id: i, name: `n${i}` })));
  // A list of n ids is its own SQL text: 300 texts, more than the cache holds.
  for (const round of [0, 1]) {
    for (let n = 1; n <= 300; n += round ? 7 : 1) {
      const ids = Array.from({ length: n }, (_, i) => i);
      const rows = await db("items").whereIn("id", ids).count({ count: "*" });
      t.is(Number(rows[0]?.count), n);
    }
  }
});

test("a statement prepared before a schema change runs against the new schema", async (t) => {
  const db = await openDatabase(":memory:", migrations);
  t.teardown(() => db.destroy());
  await db("items").insert({ id: 1, name: "mug" });
  t.deepEqual(await db("items").select("*"), [{ id: 1, name: "mug" }]);
  await db.schema.alterTable("items", (table) => table.integer("stock").defaultTo(3));
  t.deepEqual(await db("items").select("*"), [{ id: 1, name: "mug", stock: 3 }]);
});

test("LIMIT is written into the SQL, so a first() or a page reuses its statement", async (t) => {
  const db = await openDatabase(":memory:", migrations);
  t.teardown(() => db.destroy());
  await db("items").insert(Array.from({ length: 5 }, (_, i) => ({ id: i, name: `n${i}` })));
  const ran: { sql: string; bindings: unknown[] }[] = [];
  db.on("query", ({ sql, bindings }) => ran.push({ sql, bindings }));
  const prepares = await countPrepares(db);
  t.deepEqual(await db("items").where({ id: 3 }).first(), { id: 3, name: "n3" });
  t.deepEqual(await db("items").where({ id: 4 }).first(), { id: 4, name: "n4" });
  const page = (size: number) => db("items").where("id", ">", 0).orderBy("id").limit(size);
  t.deepEqual(
    (await page(2)).map((row) => row.id),
    [1, 2],
  );
  t.deepEqual(
    (await page(3)).map((row) => row.id),
    [1, 2, 3],
  );
  t.deepEqual(
    (await page(2)).map((row) => row.id),
    [1, 2],
  );
  t.deepEqual(ran[0], { sql: "select * from `items` where `id` = ? limit 1", bindings: [3] });
  t.deepEqual(ran[2]?.bindings, [0]);
  // One statement for the two first()s, one per page size.
  t.is(prepares.count, 3);
});
