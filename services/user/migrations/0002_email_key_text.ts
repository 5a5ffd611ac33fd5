import { engineOf, type Migration } from "../../../kit/db/index.js";

/**
 * email_key holds the email lowercased, which can be longer than the email: "İ" (U+0130)
 * lowercases to "i̇", two code points, so a valid email of up to 254 has a key of up to twice
 * that, and PostgreSQL refused the write. `text` rather than a wider varchar: the email's
 * validation bounds the key, and no length here has to follow JavaScript's case mapping (an
 * index entry of at most about 1 KB is well below a btree's limit). From varchar to text no row is
 * rewritten and the UNIQUE index stays. SQLite does not enforce a varchar's length: no change
 * (altering a column there rebuilds the table).
 */
export const emailKeyText: Migration = {
  name: "0002_email_key_text",
  async up(db) {
    if (engineOf(db) !== "postgres") return;
    await db.raw("ALTER TABLE users ALTER COLUMN email_key TYPE text");
  },
  // Fails while a key is longer than 254: rolled back, nothing changed.
  async down(db) {
    if (engineOf(db) !== "postgres") return;
    await db.raw("ALTER TABLE users ALTER COLUMN email_key TYPE varchar(254)");
  },
};
