import test from "ava";
import { openDatabase } from "./index.js";
import { itemsMigrations as migrations } from "./items.fixture.js";

interface Connection {
  prepare(sql: string, ...rest: unknown[]): unknown;
  readonly open: boolean;
}

test("sqlite3: each SQL text is prepared once per connection, writes still report what they changed, and the connection still closes", async (t) => {
  const db = await openDatabase(":memory:", migrations, { sqliteDriver: "sqlite3" });
  t.teardown(() => db.destroy());
  const client = db.client as {
    acquireConnection(): Promise<Connection>;
    releaseConnection(connection: Connection): Promise<void>;
  };
  // The pool's one connection: note what is prepared on it from now on.
  const connection = await client.acquireConnection();
  const prepared: string[] = [];
  const prepare = connection.prepare;
  connection.prepare = function (this: Connection, sql: string, ...rest: unknown[]) {
    prepared.push(sql);
    return prepare.call(this, sql, ...rest);
  };
  await client.releaseConnection(connection);

  t.deepEqual(await db("items").insert({ id: 7, name: "mug" }), [7]);
  for (let i = 0; i < 3; i++) {
    t.deepEqual(await db.raw("SELECT name FROM items WHERE id = ?", [7]), [{ name: "mug" }]);
  }
  t.is(await db("items").where({ id: 7 }).update({ name: "cup" }), 1);
  t.is(await db("items").where({ id: 8 }).update({ name: "pot" }), 0);
  await t.throwsAsync(db.raw("SELECT missing FROM nowhere"), { message: /no such table/ });
  t.deepEqual(await db.raw("SELECT name FROM items WHERE id = ?", [7]), [{ name: "cup" }]);
  t.deepEqual(prepared, [
    "insert into `items` (`id`, `name`) values (?, ?)",
    "SELECT name FROM items WHERE id = ?",
    "update `items` set `name` = ? where `id` = ?",
    "SELECT missing FROM nowhere",
  ]);

  // SQLite refuses to close a connection whose statements are not finalized.
  await db.destroy();
  t.false(connection.open);
});
