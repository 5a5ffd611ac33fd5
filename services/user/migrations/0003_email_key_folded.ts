import type { Knex, Migration } from "../../../kit/db/index.js";

/**
 * email_key was the email lowercased, which keeps apart emails that differ only in case where a
 * letter has more than one case: "ſam@…" and "sam@…", "ασ@…" and "ΑΣ@…" were two users. The key
 * is now lowercased, uppercased and lowercased again (store.ts emailKey, as of this migration).
 * Users whose emails would now share a key stop the upgrade, naming them: an operator changes
 * all but one.
 */
const folded = (email: string) => email.toLowerCase().toUpperCase().toLowerCase();

interface Row {
  user_id: string;
  email: string;
  email_key: string;
}

async function rekey(db: Knex, key: (email: string) => string): Promise<void> {
  const rows: Row[] = await db("users").select("user_id", "email", "email_key");
  const owners = new Map<string, Row[]>();
  for (const row of rows) owners.set(key(row.email), [...(owners.get(key(row.email)) ?? []), row]);
  const shared = [...owners.values()].filter((same) => same.length > 1);
  if (shared.length > 0) {
    const named = shared.map((same) =>
      same.map((row) => `${row.user_id} <${row.email}>`).join(" = "),
    );
    throw new Error(
      `emails must be unique whatever their case, and these users' are the same: ${named.join("; ")}. Change the email of all but one of each, then upgrade again`,
    );
  }
  for (const row of rows) {
    const changed = key(row.email);
    if (changed !== row.email_key) {
      await db("users").where({ user_id: row.user_id }).update({ email_key: changed });
    }
  }
}

export const emailKeyFolded: Migration = {
  name: "0003_email_key_folded",
  up: (db) => rekey(db, folded),
  down: (db) => rekey(db, (email) => email.toLowerCase()),
};
