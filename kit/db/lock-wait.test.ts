// A statement that meets another connection's write lock waits for it without holding up its
// process. Here the lock's holder is this process, so a wait that blocked the event loop could
// never see the lock released: it would block for the whole busy timeout (5 s), then fail.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import {
  closeToNewWork,
  connectDatabase,
  isClosedToNewWork,
  type Knex,
  observeDatabase,
  openDatabase,
  sqlOf,
} from "./index.js";
import { itemsMigrations } from "./items.fixture.js";
import { SQLITE_DRIVERS } from "./sqlite.js";

const HELD_MS = 150;

// Each transaction writes first, as the stores' do: SQLite refuses at once, without waiting, a
// transaction that read before it meets the lock.
const writes: Record<string, (db: Knex, id: number) => Promise<unknown>> = {
  "a statement of sqlOf": (db, id) =>
    sqlOf(db).query("INSERT INTO items (id, name) VALUES (?, ?)", [id, "a"]),
  "a transaction of sqlOf": (db, id) =>
    sqlOf(db).transaction(async (trx) => {
      await trx.query("INSERT INTO items (id, name) VALUES (?, ?)", [id, "a"]);
      await trx.query("SELECT count(*) AS n FROM items");
    }),
  "a knex query": (db, id) => db("items").insert({ id, name: "a" }),
  "a knex transaction": (db, id) =>
    db.transaction(async (trx) => {
      await trx("items").insert({ id, name: "a" });
      await trx("items").count();
    }),
};

for (const driver of SQLITE_DRIVERS) {
  test(`${driver}: a write waits out another connection's lock while the process goes on`, async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-lock-wait-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const file = path.join(dir, "items.sqlite");
    const db = await openDatabase(file, itemsMigrations, { sqliteDriver: driver });
    t.teardown(() => db.destroy());
    // Through the same driver: two copies of SQLite in one process do not see each other's locks.
    const holder = connectDatabase(file, { sqliteDriver: driver });
    t.teardown(() => holder.destroy());
    // What the metrics see of each insert: one statement, its wait for the lock included.
    const inserts: { seconds: number; failed: boolean }[] = [];
    observeDatabase(db, {
      statement: ({ operation, seconds, error }) => {
        if (operation === "insert") inserts.push({ seconds, failed: error !== undefined });
      },
    });

    let id = 0;
    for (const [name, write] of Object.entries(writes)) {
      id += 1;
      await holder.raw("BEGIN IMMEDIATE");
      let ticks = 0;
      const ticking = setInterval(() => ticks++, 10);
      const release = new Promise((resolve) => setTimeout(resolve, HELD_MS)).then(() =>
        holder.raw("COMMIT"),
      );
      const started = performance.now();
      try {
        await write(db, id).catch((error: Error) => {
          throw new Error(`${name}: ${error.message}`);
        });
      } finally {
        clearInterval(ticking);
        await release;
      }
      const waited = performance.now() - started;
      t.true(waited >= HELD_MS - 20, `${name} waited for the lock (${waited} ms)`);
      const [insert, ...more] = inserts.splice(0);
      t.deepEqual(more, [], `${name}: one insert observed, not one per try`);
      t.false(insert?.failed ?? true, name);
      t.true((insert?.seconds ?? 0) * 1000 >= HELD_MS - 20, `${name}: observed with its wait`);
      t.true(waited < 2_000, `${name} went on once the lock was released (${waited} ms)`);
      t.true(ticks >= 5, `${name}: the event loop ran while it waited (${ticks} ticks)`);
    }
    t.is((await db("items").count({ n: "*" }))[0]?.n, id);
  });
}

// A shutdown closes the database to new work as its grace period ends, and cuts the calls left
// soon after: a statement waiting for a lock must be refused then, not at its next try. Only
// better-sqlite3's waits are the kit's; node-sqlite3's run inside SQLite, on its worker thread.
test("better-sqlite3: a write waiting for a lock is refused the moment its database closes to new work", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-lock-wait-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "items.sqlite");
  const db = await openDatabase(file, itemsMigrations, { sqliteDriver: "better-sqlite3" });
  t.teardown(() => db.destroy());
  const holder = connectDatabase(file, { sqliteDriver: "better-sqlite3" });
  t.teardown(() => holder.destroy());
  await holder.raw("BEGIN IMMEDIATE");
  t.teardown(() => holder.raw("ROLLBACK"));

  let refused: unknown;
  const write = sqlOf(db)
    .query("INSERT INTO items (id, name) VALUES (?, ?)", [1, "a"])
    .catch((error: unknown) => {
      refused = error;
    });
  // Long enough for the waits between tries to reach their longest (50 ms).
  await new Promise((resolve) => setTimeout(resolve, 300));
  t.is(refused, undefined, "still waiting for the lock");
  closeToNewWork(db);
  // A timer due at once runs before one the write could still be sleeping on.
  await new Promise((resolve) => setTimeout(resolve, 0));
  t.true(isClosedToNewWork(refused), `refused before the next timer: ${String(refused)}`);
  await write;
});
