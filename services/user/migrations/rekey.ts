import type { Knex } from "../../../kit/db/index.js";

interface Row {
  user_id: string;
  email: string;
  email_key: string;
}

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
  const rows: Row[] = await db("users").select("user_id", "email", "email_key");
  const owners = new Map<string, Row[]>();
  for (const row of rows) owners.set(key(row.email), [...(owners.get(key(row.email)) ?? []), row]);
  const shared = [...owners.values()].filter((same) => same.length > 1);
  if (shared.length > 0) {
    const named = shared.map((same) =>
      same.map((row) => `${row.user_id} <${row.email}>${spelled(row.email)}`).join(" = "),
    );
    throw new Error(
      `emails must be unique ${compared}, and these users' are the same: ${named.join("; ")}. Change the email of all but one of each, then upgrade again`,
    );
  }
  for (const row of rows) {
    const changed = key(row.email);
    if (changed !== row.email_key) {
      await db("users").where({ user_id: row.user_id }).update({ email_key: changed });
    }
  }
}
