// What the UserService handler tests share: the handlers over a fresh database (in memory on
// SQLite), shorthands for their calls, and strings of a given length. The tests are
// create.test.ts (CreateUser), get-list.test.ts (GetUser, ListUsers) and update-delete.test.ts
// (UpdateUser, DeleteUser).
import type { ExecutionContext } from "ava";
import {
  CreateUserRequest,
  GetUserRequest,
  ListUsersRequest,
  type User,
} from "../../gen/ts/shop/user/v1/user.js";
import { callContext } from "../../test/helpers/context.js";
import { testDatabase } from "../../test/helpers/storage.js";
import { userHandlers } from "./handlers.js";
import { UserStore } from "./store.js";

export const ctx = (method: string) => callContext("shop.user.v1.UserService", method);

export async function setup(t: ExecutionContext) {
  const db = await testDatabase(t, "user");
  const handlers = userHandlers(new UserStore({ db: db, reads: db }));
  const create = async (email: string, displayName = "Ada Lovelace") =>
    (
      await handlers.createUser(
        CreateUserRequest.fromPartial({ user: { email, displayName } }),
        ctx("CreateUser"),
      )
    ).user as User;
  const read = async (userId: string) =>
    (await handlers.getUser(GetUserRequest.fromPartial({ userId }), ctx("GetUser"))).user;
  const count = async () =>
    (await handlers.listUsers(ListUsersRequest.fromPartial({ pageSize: 1000 }), ctx("ListUsers")))
      .users.length;
  return { db, handlers, create, read, count };
}

export const chars = (n: number, c = "x") => c.repeat(n);
/**
 * A valid email of exactly `n` characters whose lowercase form, the key that makes emails unique,
 * is almost twice as long: "İ" (U+0130) lowercases to "i̇", two code points.
 */
export const dottedEmailOf = (n: number, domain = "@x.c") =>
  `${chars(n - domain.length, "İ")}${domain}`;
