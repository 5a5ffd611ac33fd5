import type { Knex } from "../../../kit/db/index.js";

interface Row {
  user_id: string;
  email: string;
}

/**
 * Users read, and new keys written, at a time, so that memory stays flat however many users
 * there are (SQLite takes at most 500 rows in one insert).
 */
const BATCH = 500;
/** Groups of users with one key named at most when the migration stops for them. */
const NAMED = 100;
/** The new keys, kept in the database until every one is known to be unique. */
const REKEYED = "users_rekeyed";

/**
 * An email's characters beyond ASCII as code points, for two emails that print alike: "josé"
 * written with "é" is "jos\u{e9}", with "e" and a combining accent "jose\u{301}".
 */
const spelled = (email: string) =>
  /^[\x20-\x7e]*$/.test(email)
    ? ""
    : ` (${email.replace(/[^\x20-\x7e]/gu, (c) => `\\u{${c.codePointAt(0)?.toString(16)}}`)})`;

/**
 * Rewrites every user's email_key as `key` makes it. Users whose emails would share a key stop
 * the migration, naming them, before anything changes: an operator changes all but one.
 */
export async function rekey(
  db: Knex,
  key: (email: string) => string,
  compared = "whatever their case",
): Promise<void> {
  await db.schema.dropTableIfExists(REKEYED);
  await db.schema.createTable(REKEYED, (table) => {
    table.text("user_id").primary();
    table.text("email_key").notNullable().index();
  });
  for (let after: string | undefined; ; ) {
    const rows: Row[] = await db("users")
      .select("user_id", "email")
      .modify((query) => after !== undefined && query.where("user_id", ">", after))
      .orderBy("user_id")
      .limit(BATCH);
    if (rows.length === 0) break;
    await db(REKEYED).insert(
      rows.map((row) => ({ user_id: row.user_id, email_key: key(row.email) })),
    );
    after = rows[rows.length - 1]?.user_id;
  }
  await refuseShared(db, compared);
  // Each changed key steps aside first, so that a new key may be one another user had.
  const changed = (query: Knex.QueryBuilder) =>
    query.whereExists((rekeyed) =>
      rekeyed
        .from(REKEYED)
        .whereRaw("??.user_id = users.user_id", [REKEYED])
        .whereRaw("??.email_key <> users.email_key", [REKEYED]),
    );
  // No email holds no "@", and no user id one: the step-aside keys are nobody's.
  await db("users")
    .modify(changed)
    .update({ email_key: db.raw("'rekeying ' || user_id") });
  await db("users")
    .modify(changed)
    .update({
      email_key: db(REKEYED).select("email_key").whereRaw("??.user_id = users.user_id", [REKEYED]),
    });
  await db.schema.dropTable(REKEYED);
}

/** Stops the migration, naming users whose new keys are one, when there are any. */
async function refuseShared(db: Knex, compared: string): Promise<void> {
  const keys = await db(REKEYED)
    .select("email_key")
    .groupBy("email_key")
    .havingRaw("count(*) > 1")
    .orderBy("email_key")
    .limit(NAMED + 1);
  if (keys.length === 0) return;
  const rows: (Row & { new_key: string })[] = await db(`${REKEYED} as k`)
    .join("users as u", "u.user_id", "k.user_id")
    .whereIn(
      "k.email_key",
      keys.slice(0, NAMED).map((row) => row.email_key),
    )
    .orderBy(["k.email_key", "u.user_id"])
    .select("u.user_id", "u.email", "k.email_key as new_key");
  const groups = new Map<string, string[]>();
  for (const row of rows) {
    const named = `${row.user_id} <${row.email}>${spelled(row.email)}`;
    const group = groups.get(row.new_key);
    if (group) group.push(named);
    else groups.set(row.new_key, [named]);
  }
  const more = keys.length > NAMED ? `, and more (the first ${NAMED} named)` : "";
  throw new Error(
    `emails must be unique ${compared}, and these users' are the same: ${[...groups.values()].map((same) => same.join(" = ")).join("; ")}${more}. Change the email of all but one of each, then upgrade again`,
  );
}
