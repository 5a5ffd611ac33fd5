import type { Migration } from "../../../kit/db/index.js";
import { rekey } from "./rekey.js";

/**
 * email_key kept apart emails that differ only in how Unicode writes the same text: "é" as one
 * code point or as "e" and a combining accent, a full-width "ａ" and "a", a ligature "ﬁ" and
 * "fi" were two users who look the same to everyone. The key is now folded (0003) between two
 * compatibility normalizations, NFKC (store.ts emailKey, as of this migration). Users whose
 * emails would now share a key stop the upgrade, naming them.
 */
const folded = (email: string) => email.toLowerCase().toUpperCase().toLowerCase();
const normalized = (email: string) => folded(email.normalize("NFKC")).normalize("NFKC");

export const emailKeyNormalized: Migration = {
  name: "0004_email_key_normalized",
  up: (db) => rekey(db, normalized, "whatever their case or Unicode form"),
  down: (db) => rekey(db, folded),
};
