// The WAL sync a write rpc waits for: one fsync covers every commit made before it began, and a
// caller that arrives while one runs waits for the next.
import { existsSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { openDatabase } from "../db.js";
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

test("flushes while one runs share the next sync, which starts after they were asked for", async (t) => {
  const { db, wal } = await items(t);
  await db("items").insert({ id: 1, name: "mug" });
  const first = wal.flush();
  const later = Array.from({ length: 20 }, () => wal.flush());
  t.is(new Set(later).size, 1, "one queued sync for all of them");
  // The running sync may have begun before their commits: each resolves after the second.
  const seen = await Promise.all(later.map((flushed) => flushed.then(() => wal.syncs)));
  await first;
  t.deepEqual(new Set(seen), new Set([2]));
  t.is(wal.syncs, 2);
});

test("a file with no WAL yet has nothing to sync", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-wal-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const wal = new WalSync(path.join(dir, "none.sqlite"));
  await wal.flush();
  t.is(wal.syncs, 1);
  await wal.close();
});
