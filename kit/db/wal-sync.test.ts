// The WAL sync an answer waits for: one fsync covers every commit made before it began, a caller
// whose commits came after the running one began waits for the next, and the WAL index tells
// whether any connection to the file committed something not yet on disk.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { openDatabase } from "./index.js";
import { itemsMigrations } from "./items.fixture.js";
import { WalSync } from "./wal-sync.js";

async function items(t: ExecutionContext) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-wal-"));
  const file = path.join(dir, "items.sqlite");
  const db = await openDatabase(file, itemsMigrations);
  const wal = new WalSync(file);
  t.teardown(async () => {
    await wal.close();
    await db.destroy();
    await rm(dir, { recursive: true, force: true });
  });
  return { db, wal, file };
}

test("a flush syncs the WAL the commits went to", async (t) => {
  const { db, wal, file } = await items(t);
  await db("items").insert({ id: 1, name: "mug" });
  t.true(existsSync(`${file}-wal`));
  await wal.flush();
  t.is(wal.syncs, 1);
});

test("a commit made while a sync runs waits for the next, with every flush asked for meanwhile", async (t) => {
  const { db, wal } = await items(t);
  await db("items").insert({ id: 1, name: "mug" });
  const first = wal.flush();
  await db("items").insert({ id: 2, name: "cup" });
  const later = Array.from({ length: 20 }, () => wal.flush());
  t.is(new Set(later).size, 1, "one queued sync for all of them");
  const seen = await Promise.all(later.map((flushed) => flushed.then(() => wal.syncs)));
  await first;
  t.deepEqual(new Set(seen), new Set([2]));
  t.is(wal.syncs, 2);
});

test("a flush with nothing written since the running sync began shares it", async (t) => {
  const { db, wal } = await items(t);
  await db("items").insert({ id: 1, name: "mug" });
  const first = wal.flush();
  await db("items").select();
  t.is(wal.flush(), first);
  await first;
  t.is(wal.syncs, 1);
});

test("behind: a write or a transaction leaves the file behind until a sync covers it", async (t) => {
  const { db, wal } = await items(t);
  t.true(wal.behind, "what came before the WalSync watched is not known to be on disk");
  await wal.flush();
  t.false(wal.behind);
  await db("items").select();
  t.false(wal.behind, "a read changes nothing");
  await db("items").insert({ id: 1, name: "mug" });
  t.true(wal.behind);
  await wal.flush();
  t.false(wal.behind);
  await db.transaction((trx) => trx("items").where({ id: 1 }).update({ name: "cup" }));
  t.true(wal.behind);
  await wal.flush();
  t.false(wal.behind);
});

test("behind: another connection's commit on the same file, as another replica makes it", async (t) => {
  const { wal, file } = await items(t);
  // Opening it runs the migrations, which write (knex's migration lock).
  const replica = await openDatabase(file, itemsMigrations);
  t.teardown(() => replica.destroy());
  await wal.flush();
  t.false(wal.behind);
  await replica("items").select();
  t.false(wal.behind, "its reads change nothing");
  await replica("items").insert({ id: 1, name: "mug" });
  t.true(wal.behind);
  await wal.flush();
  t.false(wal.behind);
});

test("a file with no WAL yet has nothing to sync", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-wal-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const wal = new WalSync(path.join(dir, "none.sqlite"));
  t.true(wal.behind, "until a sync has looked");
  await wal.flush();
  t.is(wal.syncs, 1);
  t.false(wal.behind);
  await wal.close();
});
