// sqlOf on PostgreSQL: the shared suite, and what only its named statements do.
import { setTimeout as sleep } from "node:timers/promises";
import test, { type ExecutionContext } from "ava";
import knex from "knex";
import { pino } from "pino";
import { freshDatabase, opening, useStorage } from "../../test/helpers/storage.js";
import type { CallContext } from "../context.js";
import { Code } from "../errors.js";
import { toServiceError } from "../middleware/status.js";
import {
  closeToNewWork,
  type DatabaseOptions,
  inTransaction,
  isClosedToNewWork,
  isConnectionLost,
  type Knex,
  openDatabase,
  sqlOf,
} from "./index.js";
import { itemsMigrations as migrations } from "./items.fixture.js";
import { sqlSuite } from "./sql.suite.js";
import { numbered } from "./sql-postgres.js";

useStorage("postgres");

async function open(t: ExecutionContext, options: DatabaseOptions = {}): Promise<Knex> {
  const db = await openDatabase(await freshDatabase(), migrations, { schema: "items", ...options });
  t.teardown(() => db.destroy());
  return opening(db);
}

sqlSuite("pg", (t) => open(t));

test("placeholders are numbered in order, and a ? inside quotes is text", (t) => {
  t.is(
    numbered(`SELECT '?', "a?" FROM t WHERE a = ? AND b = 'it''s ?' AND c IN (?, ?)`),
    `SELECT '?', "a?" FROM t WHERE a = $1 AND b = 'it''s ?' AND c IN ($2, $3)`,
  );
});

test("pg: each statement is prepared once on a connection and then run by name", async (t) => {
  const db = await open(t, { poolMax: 1 });
  const sql = sqlOf(db);
  await sql.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "mug"]);
  for (let i = 0; i < 3; i++) {
    t.deepEqual(await sql.query("SELECT name FROM items WHERE id = ?", [1]), [{ name: "mug" }]);
  }
  // The pool's one connection, as the server saw it.
  const prepared = await sql.query<{ name: string; statement: string }>(
    "SELECT name, statement FROM pg_prepared_statements WHERE statement LIKE ? ORDER BY statement",
    ["%items%"],
  );
  t.deepEqual(
    prepared.map((row) => row.statement),
    ["INSERT INTO items (id, name) VALUES ($1, $2)", "SELECT name FROM items WHERE id = $1"],
  );
  t.true(prepared.every((row) => /^shop_\d+_[0-9a-f]{16}$/.test(row.name)));

  // Another database's pool, on another connection: the same text has the same name there.
  const other = sqlOf(await open(t, { poolMax: 1 }));
  await other.query("SELECT name FROM items WHERE id = ?", [1]);
  const there = await other.query<{ name: string }>(
    "SELECT name FROM pg_prepared_statements WHERE statement = ?",
    ["SELECT name FROM items WHERE id = $1"],
  );
  t.deepEqual(
    there.map((row) => row.name),
    prepared.filter((row) => row.statement.startsWith("SELECT")).map((row) => row.name),
  );
});

test("pg: with prepared statements off (a pooler that cannot keep them), none is prepared", async (t) => {
  const db = await open(t, { poolMax: 1, preparedStatements: false });
  const sql = sqlOf(db);
  await sql.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "mug"]);
  t.deepEqual(await sql.query("SELECT name FROM items WHERE id = ?", [1]), [{ name: "mug" }]);
  t.deepEqual(await sql.query("SELECT name FROM pg_prepared_statements"), []);
});

test("pg: a statement whose table a migration changed is prepared again, alone and in a transaction", async (t) => {
  const db = await open(t, { poolMax: 1 });
  const sql = sqlOf(db);
  await sql.query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "mug"]);
  const read = () => sql.query("SELECT * FROM items WHERE id = ?", [1]);
  t.deepEqual(await read(), [{ id: 1, name: "mug" }]);

  // A `SELECT *` prepared before now returns another row type: the server refuses to run it.
  await db.raw("ALTER TABLE items ADD COLUMN colour text NOT NULL DEFAULT 'blue'");
  t.deepEqual(await read(), [{ id: 1, name: "mug", colour: "blue" }]);

  await db.raw("ALTER TABLE items ADD COLUMN size int NOT NULL DEFAULT 2");
  const inTransaction = await sql.transaction(async (trx) => {
    await trx.query("UPDATE items SET name = ? WHERE id = ?", ["cup", 1]);
    return trx.query("SELECT * FROM items WHERE id = ?", [1]);
  });
  t.deepEqual(inTransaction, [{ id: 1, name: "cup", colour: "blue", size: 2 }]);
});

test("pg: of two transactions that deadlock, the one the server rolls back runs again", async (t) => {
  const db = await open(t);
  const sql = sqlOf(db);
  await sql.query("INSERT INTO items (id, name) VALUES (1, 'mug'), (2, 'tea')");
  // Each takes one row, then, once both hold theirs, wants the other's.
  let held = 0;
  let bothHeld!: () => void;
  const both = new Promise<void>((resolve) => {
    bothHeld = resolve;
  });
  let runs = 0;
  const swap = (first: number, second: number, name: string) =>
    sql.transaction(async (trx) => {
      runs++;
      await trx.query("UPDATE items SET name = ? WHERE id = ?", [name, first]);
      if (++held === 2) bothHeld();
      await both;
      await trx.query("UPDATE items SET name = ? WHERE id = ?", [name, second]);
    });
  await Promise.all([swap(1, 2, "a"), swap(2, 1, "b")]);
  t.is(runs, 3);
  const rows = await sql.query<{ name: string }>("SELECT name FROM items ORDER BY id");
  // The one run again went second, so both rows carry its name.
  t.is(new Set(rows.map((row) => row.name)).size, 1);
});

test("pg: a connection that cannot be made (a host that does not resolve, a refused port) is UNAVAILABLE DATABASE_BUSY", async (t) => {
  const ctx = { signal: new AbortController().signal } as CallContext;
  const quiet = { warn: () => {}, error: () => {}, debug: () => {}, deprecate: () => {} };
  for (const url of [
    "postgres://shop@nonexistent.invalid:5432/shop",
    "postgres://shop@127.0.0.1:1/shop",
  ]) {
    const db = knex({ client: "pg", connection: url, pool: { min: 0, max: 1 }, log: quiet });
    t.teardown(() => db.destroy());
    const error = await t.throwsAsync(db.raw("SELECT 1"));
    t.like(
      toServiceError(error, ctx),
      { code: Code.UNAVAILABLE, details: { reason: "DATABASE_BUSY" } },
      `${url}: ${error?.message}`,
    );
  }
});

test("pg: a connection lost under a statement is UNAVAILABLE (DATABASE_UNAVAILABLE), not INTERNAL", async (t) => {
  const db = await open(t);
  const ctx = { signal: new AbortController().signal } as CallContext;
  // One of the pool's connections, its session ended from another, as an administrator or a
  // failover would: node-postgres then refuses it with words, not a SQLSTATE.
  type Connection = {
    processID: number;
    query(sql: string): Promise<unknown>;
    once(event: "end", listener: () => void): void;
  };
  const connection = (await db.client.acquireConnection()) as Connection;
  t.teardown(() => db.client.releaseConnection(connection));
  const ended = new Promise<void>((resolve) => connection.once("end", resolve));
  await db.raw("SELECT pg_terminate_backend(?)", [connection.processID]);
  await ended;
  const lost = await t.throwsAsync(connection.query("SELECT 1"));
  t.true(isConnectionLost(lost), String(lost));
  t.like(toServiceError(lost, ctx), {
    code: Code.UNAVAILABLE,
    details: { reason: "DATABASE_UNAVAILABLE" },
  });
  // An administrator's end of a session in the middle of a statement is a SQLSTATE: busy.
  t.like(
    toServiceError(Object.assign(new Error("terminating connection"), { code: "57P01" }), ctx),
    { code: Code.UNAVAILABLE, details: { reason: "DATABASE_BUSY" } },
  );
  // A server out of disk (or memory) for a write: no room, as SQLite's SQLITE_FULL
  // (test/database-full.test.ts).
  t.like(
    toServiceError(
      Object.assign(new Error('could not extend file "base/16384/16385"'), { code: "53100" }),
      ctx,
    ),
    { code: Code.RESOURCE_EXHAUSTED, details: { reason: "DATABASE_FULL" } },
  );
  // Anything else is still our own failure.
  t.is(toServiceError(new Error("a bug"), ctx).code, Code.INTERNAL);
});

test("pg: a transaction paused between its statements past the statement timeout is UNAVAILABLE, and kept nothing", async (t) => {
  // Its warnings (the connection the server ended) go nowhere.
  const db = await open(t, { statementTimeoutMs: 100, logger: pino({ level: "silent" }) });
  const sql = sqlOf(db);
  const ctx = { signal: new AbortController().signal } as CallContext;
  // A process paused inside a transaction (a long garbage collection, a starved CPU) holds its
  // locks; the server ends its session (idle_in_transaction_session_timeout), rolling it back.
  // The next statement hears of it as the session's end (25P03) or as a lost connection.
  for (const run of [
    (work: Parameters<typeof sql.transaction>[0]) => sql.transaction(work),
    (work: Parameters<typeof sql.transaction>[0]) => inTransaction(db, (trx) => work(sqlOf(trx))),
  ]) {
    const error = await t.throwsAsync(
      run(async (trx) => {
        await trx.query("INSERT INTO items (id, name) VALUES (1, 'mug')");
        await sleep(500);
        await trx.query("INSERT INTO items (id, name) VALUES (2, 'tea')");
      }),
    );
    const answer = toServiceError(error, ctx, false);
    t.is(answer.code, Code.UNAVAILABLE, `${(error as { code?: string }).code}: ${error?.message}`);
    t.true(["DATABASE_BUSY", "DATABASE_UNAVAILABLE"].includes(String(answer.details.reason)));
    t.deepEqual(await sql.query("SELECT id FROM items"), []);
  }
  t.like(
    toServiceError(
      Object.assign(new Error("terminating connection due to idle-in-transaction timeout"), {
        code: "25P03",
      }),
      ctx,
      false,
    ),
    { code: Code.UNAVAILABLE, details: { reason: "DATABASE_BUSY" } },
  );
});

test("pg: statements waiting for a connection when the database closes to new work are refused at once", async (t) => {
  const db = await open(t, { poolMax: 1 });
  const events: string[] = [];
  // A transaction under way holds the pool's one connection, and runs to its end.
  const holding = db.transaction(async (trx) => {
    await trx.raw("SELECT pg_sleep(1)");
  });
  const pool = (db.client as { pool: { numUsed(): number } }).pool;
  while (pool.numUsed() === 0) await new Promise((resolve) => setTimeout(resolve, 5));
  const waiters = [sqlOf(db).query("SELECT 1"), db("items").select(), db.transaction(() => {})];
  const refused = waiters.map((waiter) =>
    waiter.then(
      () => "served",
      (error: unknown) => {
        events.push("refused");
        return isClosedToNewWork(error) ? "closed" : String(error);
      },
    ),
  );
  closeToNewWork(db);
  const held = holding.then(() => events.push("held to its end"));
  t.deepEqual(await Promise.all(refused), ["closed", "closed", "closed"]);
  await held;
  // Refused as the database closed, not once the connection came free.
  t.deepEqual(events, ["refused", "refused", "refused", "held to its end"]);
});

test("pg: every session is READ COMMITTED, where the database defaults to SERIALIZABLE too", async (t) => {
  const location = await freshDatabase();
  const database = new URL(location).pathname.slice(1);
  // A knex of its own, without the kit's session options; the setting takes from the next session.
  const plain = () => knex({ client: "pg", connection: location, pool: { min: 0, max: 1 } });
  const altering = plain();
  await altering.raw(
    `ALTER DATABASE "${database}" SET default_transaction_isolation = 'serializable'`,
  );
  await altering.destroy();
  const reading = plain();
  t.teardown(() => reading.destroy());
  const shown = await reading.raw("SHOW transaction_isolation");
  t.is(shown.rows[0].transaction_isolation, "serializable", "the database's default");

  // Without options in the URL, and with some of the operator's own, which are kept.
  const withOptions = `${location}?options=${encodeURIComponent("-c work_mem=1234kB")}`;
  for (const url of [location, withOptions]) {
    const db = opening(await openDatabase(url, migrations, { schema: "items" }));
    t.teardown(() => db.destroy());
    const sql = sqlOf(db);
    const [row] = await sql.query<{ transaction_isolation: string }>("SHOW transaction_isolation");
    t.is(row?.transaction_isolation, "read committed", url);
    const isolation = await db.transaction((trx) => trx.raw("SHOW transaction_isolation"));
    t.is(isolation.rows[0].transaction_isolation, "read committed", url);
  }
  const db = opening(await openDatabase(withOptions, migrations, { schema: "items" }));
  t.teardown(() => db.destroy());
  const [row] = await sqlOf(db).query<{ work_mem: string }>("SHOW work_mem");
  t.is(row?.work_mem, "1234kB");
});
