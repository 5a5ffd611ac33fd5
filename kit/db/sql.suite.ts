// The behaviour of sqlOf that every path shares, run by sql.test.ts on both SQLite drivers and on
// the knex.raw fallback, and by sql.postgres.test.ts on PostgreSQL: `open` gives a database with
// the items fixture migrated.
import test, { type ExecutionContext } from "ava";
import {
  type DatabaseObserver,
  isUniqueViolation,
  type Knex,
  observeDatabase,
  type SqlStatements,
  sqlOf,
  valuesOf,
} from "./index.js";

/**
 * A transaction begun with `begin` that writes with `write`, then stays open until `release()`;
 * then it throws, so it rolls back. Resolves once the write is in.
 */
async function holdOpen<Trx>(
  begin: (work: (trx: Trx) => Promise<void>) => Promise<unknown>,
  write: (trx: Trx) => Promise<unknown>,
) {
  let opened!: () => void;
  const open = new Promise<void>((resolve) => {
    opened = resolve;
  });
  let release!: () => void;
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  const rolledBack = begin(async (trx) => {
    await write(trx);
    opened();
    await released;
    throw new Error("roll back");
  }).catch((error: Error) => error.message);
  await open;
  return { release, rolledBack };
}

const names = async (db: Knex) =>
  (await db("items").orderBy("id").select("name")).map((row: { name: string }) => row.name);

/**
 * Registers the shared tests of sqlOf, named `label: …`, on the databases `open` gives. `own`:
 * sqlOf has a path of its own for this driver, which knex's query runner never sees.
 */
export function sqlSuite(
  label: string,
  open: (t: ExecutionContext) => Promise<Knex>,
  own = true,
): void {
  test(`${label}: ${own ? "no statement goes through knex's runner" : "statements go through knex.raw"}`, async (t) => {
    const db = await open(t);
    const sql = sqlOf(db);
    let seen = 0;
    db.on("query", () => seen++);
    await sql.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "mug"]);
    await sql.transaction(async (trx) => {
      await trx.query("UPDATE items SET name = ? WHERE id = ?", ["cup", 1]);
    });
    t.deepEqual(await sql.query("SELECT name FROM items WHERE id = ?", [1]), [{ name: "cup" }]);
    if (own) t.is(seen, 0);
    else t.true(seen >= 3);
  });

  test(`${label}: a query returns its rows, and a write its RETURNING rows or none`, async (t) => {
    const db = await open(t);
    const sql = sqlOf(db);
    const values = valuesOf([
      [1, "mug"],
      [2, "tea"],
    ]);
    t.deepEqual(
      await sql.query(`INSERT INTO items (id, name) VALUES ${values.text}`, values.bindings),
      [],
    );
    t.deepEqual(await sql.query("SELECT name FROM items WHERE id = ?", [2]), [{ name: "tea" }]);
    t.deepEqual(await sql.query("SELECT name FROM items WHERE id = ?", [3]), []);
    t.deepEqual(
      await sql.query("UPDATE items SET name = ? WHERE id = ? RETURNING id", ["cup", 1]),
      [{ id: 1 }],
    );
    t.deepEqual(
      await sql.query("UPDATE items SET name = ? WHERE id = ? RETURNING id", ["x", 9]),
      [],
    );
    t.deepEqual(await names(db), ["cup", "tea"]);
  });

  test(`${label}: a transaction keeps every write or, when its work throws, none`, async (t) => {
    const db = await open(t);
    const sql = sqlOf(db);
    await sql.transaction(async (trx) => {
      await trx.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "mug"]);
      await trx.query("INSERT INTO items (id, name) VALUES (?, ?)", [2, "tea"]);
    });
    const refused = await sql
      .transaction(async (trx) => {
        await trx.query("INSERT INTO items (id, name) VALUES (?, ?)", [3, "pot"]);
        await trx.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "again"]);
      })
      .catch((error: unknown) => error);
    t.true(isUniqueViolation(refused));
    await t.throwsAsync(
      sql.transaction(async (trx) => {
        await trx.query("UPDATE items SET name = ? WHERE id = ?", ["cup", 1]);
        throw new Error("changed my mind");
      }),
      { message: "changed my mind" },
    );
    t.deepEqual(await names(db), ["mug", "tea"]);
  });

  test(`${label}: a statement made while a knex transaction is open is not part of it`, async (t) => {
    const db = await open(t);
    const sql = sqlOf(db);
    // The connection is known: a statement on its own may now run without the pool.
    await sql.query("SELECT 1");
    const held = await holdOpen<Knex.Transaction>(
      (work) => db.transaction(work),
      (trx) => trx("items").insert({ id: 1, name: "mug" }),
    );
    const write = sql.query("INSERT INTO items (id, name) VALUES (?, ?)", [2, "tea"]);
    const transaction = sql.transaction((trx) =>
      trx.query("INSERT INTO items (id, name) VALUES (?, ?)", [3, "pot"]),
    );
    held.release();
    t.is(await held.rolledBack, "roll back");
    await Promise.all([write, transaction]);
    t.deepEqual(await names(db), ["tea", "pot"]);
  });

  test(`${label}: a statement made while a plain transaction is open is not part of it`, async (t) => {
    const db = await open(t);
    const sql = sqlOf(db);
    await sql.query("SELECT 1");
    const held = await holdOpen<SqlStatements>(
      (work) => sql.transaction(work),
      (trx) => trx.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "mug"]),
    );
    const write = sql.query("INSERT INTO items (id, name) VALUES (?, ?)", [2, "tea"]);
    held.release();
    t.is(await held.rolledBack, "roll back");
    await write;
    t.deepEqual(await names(db), ["tea"]);
  });

  test(`${label}: the database's observers see each statement and each transaction by its first statement`, async (t) => {
    const db = await open(t);
    const seen: string[] = [];
    const observer = (name: string): DatabaseObserver => ({
      statement: ({ operation, table, error }) =>
        seen.push(`${name} ${operation} ${table}${error ? " failed" : ""}`),
      async transaction(run, info) {
        seen.push(`${name} begins`);
        try {
          return await run();
        } finally {
          seen.push(`${name} ends ${info.first}`);
        }
      },
    });
    observeDatabase(db, observer("a"));
    observeDatabase(db, observer("b"));
    const sql = sqlOf(db);
    await sql.transaction(async (trx) => {
      await trx.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "mug"]);
      await trx.query("SELECT * FROM items");
    });
    await sql.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "again"]).catch(() => {});
    t.deepEqual(seen, [
      "b begins",
      "a begins",
      "a insert items",
      "b insert items",
      "a select items",
      "b select items",
      "a ends insert items",
      "b ends insert items",
      "a insert items failed",
      "b insert items failed",
    ]);
  });
}
