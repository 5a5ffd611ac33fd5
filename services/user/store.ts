import type { User } from "../../gen/ts/shop/user/v1/user.js";
import {
  isUniqueViolation,
  type Knex,
  pageBySeq,
  readTime,
  type Sql,
  sqlOf,
  textBytes,
  updateTimeOf,
} from "../../kit/db/index.js";
import { errors } from "../../kit/errors.js";

interface UserRow {
  seq: number;
  user_id: string;
  email: string;
  email_key: string;
  display_name: string;
  /** Milliseconds since the epoch; read with readTime, as every bigint. */
  create_time: number | string;
  update_time: number | string;
}

const toUser = (row: UserRow): User => ({
  userId: row.user_id,
  email: row.email,
  displayName: row.display_name,
  createTime: new Date(readTime(row.create_time)),
  updateTime: new Date(readTime(row.update_time)),
});

/**
 * The key that makes emails unique whatever their case or Unicode form: normalized (NFKC, so a
 * precomposed "é" meets "e" with a combining accent, and a full-width "ａ" meets "a"), then
 * lowercased, uppercased and lowercased again, so that every case of a letter meets ("ſ" and
 * "s", "ς" and "σ", "ẞ", "ß" and "ss"), and normalized again. Stricter than Unicode's case
 * folding in one place: a dotless "ı" meets "i".
 */
export const emailKey = (email: string) =>
  email.normalize("NFKC").toLowerCase().toUpperCase().toLowerCase().normalize("NFKC");

const emailTaken = (email: string) =>
  errors.alreadyExists("EMAIL_TAKEN", `a user with email ${email} already exists`, { email });

const notFound = (userId: string) =>
  errors.notFound("USER_NOT_FOUND", `user ${userId} does not exist`, { user_id: userId });

/** The users table: the only code that touches it. */
export class UserStore {
  /** GetUser's read, in plain SQL (kit/db/sql.ts). */
  private readonly sql: Sql;

  /** The service's database: `reads` for reads outside a transaction (kit/service.ts). */
  constructor(private readonly env: { db: Knex; reads: Knex }) {
    this.sql = sqlOf(env.reads);
  }

  async insert(user: { userId: string; email: string; displayName: string }): Promise<User> {
    const now = Date.now();
    const row = {
      user_id: user.userId,
      email: user.email,
      email_key: emailKey(user.email),
      display_name: user.displayName,
      create_time: now,
      update_time: now,
    };
    try {
      await this.env.db("users").insert(row);
    } catch (error) {
      if (isUniqueViolation(error)) throw emailTaken(user.email);
      throw error;
    }
    return toUser(row as UserRow);
  }

  async get(userId: string): Promise<User> {
    // GetUser's read, on every order: plain SQL (kit/db/sql.ts).
    const [row] = await this.sql.query<UserRow>("SELECT * FROM users WHERE user_id = ?", [userId]);
    if (!row) throw notFound(userId);
    return toUser(row);
  }

  /** Up to `limit` users after `afterSeq`, oldest first, and the seq to continue from. */
  async list(
    limit: number,
    afterSeq?: number,
    bytes?: number,
  ): Promise<{ users: User[]; nextSeq?: number }> {
    const { items, nextSeq } = await pageBySeq(this.env.reads<UserRow>("users"), limit, {
      from: afterSeq,
      items: (rows: UserRow[]) => rows.map(toUser),
      // An encoded user is its text plus about 60 bytes of ids and times.
      sizeOf: (user) => textBytes(user.userId, user.email, user.displayName) + 60,
      bytes,
    });
    return { users: items, ...(nextSeq !== undefined && { nextSeq }) };
  }

  async update(userId: string, changes: { email?: string; displayName?: string }): Promise<User> {
    const fields: Partial<UserRow> = {};
    if (changes.email !== undefined) {
      fields.email = changes.email;
      fields.email_key = emailKey(changes.email);
    }
    if (changes.displayName !== undefined) fields.display_name = changes.displayName;
    const patch = { ...fields, update_time: updateTimeOf(this.env.db, fields, Date.now()) };
    // One statement that also reads the row back: nothing can fail after the write.
    const rows: UserRow[] = await this.env
      .db("users")
      .where({ user_id: userId })
      .update(patch, "*")
      .catch((error: unknown) => {
        throw isUniqueViolation(error) ? emailTaken(changes.email ?? "") : error;
      });
    const [row] = rows;
    if (!row) throw notFound(userId);
    return toUser(row);
  }

  async delete(userId: string): Promise<void> {
    const count = await this.env.db("users").where({ user_id: userId }).delete();
    if (count === 0) throw notFound(userId);
  }
}
