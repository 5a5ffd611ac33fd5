import type { Migration } from "../../../kit/db/index.js";
import { rekey } from "./rekey.js";

/**
 * email_key was the email lowercased, which keeps apart emails that differ only in case where a
 * letter has more than one case: "ſam@…" and "sam@…", "ασ@…" and "ΑΣ@…" were two users. The key
 * is now lowercased, uppercased and lowercased again (store.ts emailKey, as of this migration).
 * Users whose emails would now share a key stop the upgrade, naming them: an operator changes
 * all but one.
 */
const folded = (email: string) => email.toLowerCase().toUpperCase().toLowerCase();

export const emailKeyFolded: Migration = {
  name: "0003_email_key_folded",
  up: (db) => rekey(db, folded),
  down: (db) => rekey(db, (email) => email.toLowerCase()),
};
