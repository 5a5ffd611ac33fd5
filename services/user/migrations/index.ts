import type { Migration } from "../../../kit/db.js";
import { createUsers } from "./0001_create_users.js";

/** In order; never edit one that has shipped, add the next. */
export const migrations: Migration[] = [createUsers];
