// 0003 on a file written before it: keys made by lowercasing alone are folded, and users whose
// emails now count as the same stop the upgrade with nothing changed.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import {
  connectDatabase,
  type Knex,
  MigrationFailed,
  openDatabase,
} from "../../../kit/db/index.js";
import { emailKeyNormalized } from "./0004_email_key_normalized.js";
import { migrations } from "./index.js";
import { rekey } from "./rekey.js";

/** An SQLite file at 0002, holding `emails` keyed as 0002's code keyed them. */
async function before0003(t: ExecutionContext, emails: string[]): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-email-key-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "user.sqlite");
  const db = await openDatabase(file, migrations.slice(0, 2));
  await db.batchInsert(
    "users",
    emails.map((email, i) => ({
      user_id: `usr_${i}`,
      email,
      email_key: email.toLowerCase(),
      display_name: "Someone",
      create_time: 0,
      update_time: 0,
    })),
    500,
  );
  await db.destroy();
  return file;
}

const keysOf = async (db: Knex) =>
  Object.fromEntries(
    (await db("users").select("email", "email_key")).map((row) => [row.email, row.email_key]),
  );

test("0003 folds the keys 0002 wrote, so an email in another case is taken", async (t) => {
  const file = await before0003(t, ["ſam@example.com", "ασ@example.gr", "ada@example.com"]);
  const db = await openDatabase(file, migrations);
  t.teardown(() => db.destroy());
  t.deepEqual(await keysOf(db), {
    "ſam@example.com": "sam@example.com",
    "ασ@example.gr": "ας@example.gr",
    "ada@example.com": "ada@example.com",
  });
});

test("0003 refuses users whose emails now count as the same, and changes nothing", async (t) => {
  const file = await before0003(t, ["sam@example.com", "ſam@example.com", "ada@example.com"]);
  const error = await t.throwsAsync(openDatabase(file, migrations));
  t.regex(error?.message ?? "", /usr_0 <sam@example\.com> = usr_1 <ſam@example\.com>/);
  const db = await openDatabase(file, migrations.slice(0, 2));
  t.teardown(() => db.destroy());
  t.deepEqual(await keysOf(db), {
    "sam@example.com": "sam@example.com",
    "ſam@example.com": "ſam@example.com",
    "ada@example.com": "ada@example.com",
  });
  t.deepEqual(
    await db("knex_migrations").pluck("name"),
    migrations.slice(0, 2).map((m) => m.name),
  );
});

test("0004 normalizes the keys 0003 wrote, and refuses users whose emails are one text", async (t) => {
  const file = await before0003(t, ["ｊosé@example.com", "ada@example.com"]);
  const db = await openDatabase(file, migrations);
  t.teardown(() => db.destroy());
  t.deepEqual(await keysOf(db), {
    "ｊosé@example.com": "josé@example.com",
    "ada@example.com": "ada@example.com",
  });

  const same = await before0003(t, ["jos\u00e9@example.com", "jose\u0301@example.com"]);
  const error = await t.throwsAsync(openDatabase(same, migrations), {
    instanceOf: MigrationFailed,
  });
  t.regex(error?.message ?? "", /^migration 0004_email_key_normalized failed, and none of/);
  t.true(
    error?.message.includes(
      "usr_0 <jos\u00e9@example.com> (jos\\u{e9}@example.com) = usr_1 <jose\u0301@example.com> (jose\\u{301}@example.com)",
    ),
    error?.message,
  );
  const at0003 = await openDatabase(same, migrations.slice(0, 3));
  t.teardown(() => at0003.destroy());
  t.deepEqual(
    await at0003("knex_migrations").pluck("name"),
    migrations.slice(0, 3).map((m) => m.name),
  );
});

test("0004 reads and rekeys users a batch at a time, however many there are", async (t) => {
  const emails = Array.from({ length: 1_200 }, (_, i) => `ＵＳＥＲ${i}@example.com`);
  const file = await before0003(t, emails);
  await (await openDatabase(file, migrations.slice(0, 3))).destroy();
  const db = connectDatabase(file);
  t.teardown(() => db.destroy());
  let mostRows = 0;
  db.on("query-response", (response: unknown) => {
    if (Array.isArray(response)) mostRows = Math.max(mostRows, response.length);
  });
  await db.transaction((trx) => emailKeyNormalized.up(trx));
  t.true(mostRows <= 500, `one statement returned ${mostRows} rows`);
  const keys = await keysOf(db);
  t.is(Object.keys(keys).length, 1_200);
  t.is(keys["ＵＳＥＲ1199@example.com"], "user1199@example.com");
  t.false(await db.schema.hasTable("users_rekeyed"));
});

test("a key may become one another user's key gives up in the same migration", async (t) => {
  const file = await before0003(t, ["a@example.com", "b@example.com"]);
  const db = await openDatabase(file, migrations);
  t.teardown(() => db.destroy());
  const swapped = (email: string) =>
    email === "a@example.com" ? "b@example.com" : "a@example.com";
  await db.transaction((trx) => rekey(trx, swapped));
  t.deepEqual(await keysOf(db), {
    "a@example.com": "b@example.com",
    "b@example.com": "a@example.com",
  });
});
