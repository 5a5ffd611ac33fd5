import type { Migration } from "../../../kit/db/index.js";
import { createUsers } from "./0001_create_users.js";
import { emailKeyText } from "./0002_email_key_text.js";
import { emailKeyFolded } from "./0003_email_key_folded.js";
import { emailKeyNormalized } from "./0004_email_key_normalized.js";

/** In order; never edit one that has shipped, add the next. */
export const migrations: Migration[] = [
  createUsers,
  emailKeyText,
  emailKeyFolded,
  emailKeyNormalized,
];
