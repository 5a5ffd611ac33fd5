import type { User, UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { newId } from "../../kit/ids.js";
import { requestedPage } from "../../kit/page-token.js";
import { requireOwner } from "../../kit/security/auth.js";
import type { Handlers } from "../../kit/service.js";
import { check, codePoints, type Violations } from "../../kit/validate.js";
import { emailKey, type UserStore } from "./store.js";

const MUTABLE = ["email", "display_name"] as const;

/**
 * Spaces, control characters and characters that show nothing (formatting ones, and those
 * Unicode says to ignore where unsupported): none belongs in an address, and an address with one
 * would look like another's.
 */
const NOT_IN_EMAIL = /[\s\p{Cc}\p{Cf}\p{Default_Ignorable_Code_Point}\u2800]/u;
/**
 * A bound on the key that keeps emails unique, in bytes: NFKC writes a few characters as up to
 * 18, and PostgreSQL's unique index refuses an entry above about 2.7 KB.
 */
const MAX_EMAIL_KEY_BYTES = 2000;

/**
 * A second "@" in an email's unique key (NFKC makes a full-width "＠" one), outside a quoted local
 * part ("ada@home"@example.com): no mailbox has such an address.
 */
function unquotedAt(key: string): boolean {
  const local = key.slice(0, key.lastIndexOf("@"));
  return local.includes("@") && !/^".*"$/s.test(local);
}

function checkEmail(v: Violations, field: string, email: string) {
  v.text(field, email, 254, 3);
  const length = codePoints(email, 254);
  if (length < 3 || length > 254 || email.includes("\u0000")) return;
  const at = email.lastIndexOf("@");
  if (at < 1 || at === email.length - 1) {
    v.add(field, 'must be a local part, "@" and a domain, as in ada@example.com');
  } else if (NOT_IN_EMAIL.test(email)) {
    v.add(field, "must not contain spaces, control characters or invisible formatting characters");
  } else {
    const key = emailKey(email);
    if (unquotedAt(key)) {
      v.add(field, 'must have one "@", or a quoted local part, as in "ada@home"@example.com');
    } else if (Buffer.byteLength(key) > MAX_EMAIL_KEY_BYTES) {
      v.add(field, `must be at most ${MAX_EMAIL_KEY_BYTES} bytes of UTF-8 once normalized (NFKC)`);
    }
  }
}

/** UserService: each rpc validates its request, then asks the store. */
export function userHandlers(store: UserStore): Handlers<typeof UserServiceService> {
  return {
    async createUser({ user }) {
      const v = check();
      if (!user) v.add("user", "is required");
      else {
        checkEmail(v, "user.email", user.email);
        v.name("user.display_name", user.displayName, 100);
      }
      v.throwIfAny();
      const { email, displayName } = user as User;
      return { user: await store.insert({ userId: newId("usr"), email, displayName }) };
    },

    async getUser({ userId }, ctx) {
      check().id("user_id", userId).throwIfAny();
      requireOwner(ctx, userId, "the user");
      return { user: await store.get(userId) };
    },

    async listUsers(request, ctx) {
      const page = requestedPage(check(), ctx, request);
      const { users, nextSeq } = await store.list(page.limit, page.after, page.bytes);
      return { users, nextPageToken: page.tokenAfter(nextSeq) };
    },

    async updateUser({ user, updateMask }, ctx) {
      const v = check();
      const paths = updateMask ?? [];
      if (!user) v.add("user", "is required");
      else v.id("user.user_id", user.userId);
      v.mask(paths, MUTABLE);
      if (user && paths.includes("email")) checkEmail(v, "user.email", user.email);
      if (user && paths.includes("display_name")) {
        v.name("user.display_name", user.displayName, 100);
      }
      v.throwIfAny();
      const { userId, email, displayName } = user as User;
      requireOwner(ctx, userId, "the user");
      return {
        user: await store.update(userId, {
          ...(paths.includes("email") && { email }),
          ...(paths.includes("display_name") && { displayName }),
        }),
      };
    },

    async deleteUser({ userId }) {
      check().id("user_id", userId).throwIfAny();
      await store.delete(userId);
      return {};
    },
  };
}
