// UserService handlers called directly, each test on its own database (in memory on SQLite).
import test, { type ExecutionContext } from "ava";
import {
  CreateUserRequest,
  DeleteUserRequest,
  GetUserRequest,
  ListUsersRequest,
  UpdateUserRequest,
  type User,
} from "../../gen/ts/shop/user/v1/user.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { encodePageToken } from "../../kit/page-token.js";
import { callContext } from "../../test/helpers/context.js";
import { tamperedTokens } from "../../test/helpers/page-tokens.js";
import { expectInvalid } from "../../test/helpers/status.js";
import { testDatabase } from "../../test/helpers/storage.js";
import { userHandlers } from "./handlers.js";
import { UserStore } from "./store.js";

const ctx = (method: string) => callContext("shop.user.v1.UserService", method);

async function setup(t: ExecutionContext) {
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

const chars = (n: number, c = "x") => c.repeat(n);
/** A valid email of exactly `n` characters. */
const emailOf = (n: number) => `${chars(n - "@example.com".length, "e")}@example.com`;
/**
 * A valid email of exactly `n` characters whose lowercase form, the key that makes emails unique,
 * is almost twice as long: "İ" (U+0130) lowercases to "i̇", two code points.
 */
const dottedEmailOf = (n: number, domain = "@x.c") => `${chars(n - domain.length, "İ")}${domain}`;
const codePoints = (text: string) => [...text].length;

// CreateUser

test("CreateUser assigns an id and times and returns the fields it was given", async (t) => {
  const { handlers } = await setup(t);
  const before = Date.now();
  const { user } = await handlers.createUser(
    CreateUserRequest.fromPartial({
      user: {
        userId: "usr_chosen_by_client",
        email: "Ada@Example.com",
        displayName: "Ada Lovelace",
        createTime: new Date(0),
        updateTime: new Date(0),
      },
    }),
    ctx("CreateUser"),
  );
  t.truthy(user);
  t.regex(user?.userId ?? "", /^usr_[A-Za-z0-9_-]{16}$/);
  t.not(user?.userId, "usr_chosen_by_client", "user_id is output only");
  t.is(user?.email, "Ada@Example.com", "the email keeps its case");
  t.is(user?.displayName, "Ada Lovelace");
  t.true((user?.createTime?.getTime() ?? 0) >= before, "create_time is the server's, not ours");
  t.deepEqual(user?.updateTime, user?.createTime);

  const { user: read } = await handlers.getUser(
    GetUserRequest.fromPartial({ userId: user?.userId }),
    ctx("GetUser"),
  );
  t.deepEqual(read, user);
});

test("CreateUser gives each user a different id", async (t) => {
  const { create } = await setup(t);
  const a = await create("a@example.com");
  const b = await create("b@example.com");
  t.not(a.userId, b.userId);
});

test("CreateUser accepts the boundary lengths", async (t) => {
  const { create } = await setup(t);
  t.is((await create("a@b")).email, "a@b");
  t.is((await create(emailOf(254))).email.length, 254);
  t.is((await create("one@example.com", "x")).displayName, "x");
  t.is((await create("two@example.com", chars(100))).displayName.length, 100);
});

test("CreateUser accepts an email whose lowercase form is longer than 254 characters", async (t) => {
  const { create, read } = await setup(t);
  const email = dottedEmailOf(254);
  t.is(codePoints(email), 254);
  t.is(codePoints(email.toLowerCase()), 504);
  const user = await create(email);
  t.is(user.email, email, "the email keeps its case");
  t.deepEqual(await read(user.userId), user);
});

test("CreateUser accepts an email whose normalized key is 2000 bytes, and refuses one past it", async (t) => {
  const { create, read } = await setup(t);
  // U+FDFA is one character; NFKC writes it as 18, 33 bytes of UTF-8.
  const longest = `${"\ufdfa".repeat(60)}@x.c`;
  const user = await create(longest);
  t.deepEqual(await read(user.userId), user);
  await expectInvalid(t, create(`${"\ufdfa".repeat(61)}@x.c`), ["user.email"]);
});

test("CreateUser refuses a long dotted email taken in another case", async (t) => {
  const { create, count } = await setup(t);
  await create(dottedEmailOf(254));
  const email = dottedEmailOf(254, "@X.C");
  const error = await t.throwsAsync(create(email), { instanceOf: ServiceError });
  t.is(error?.code, Code.ALREADY_EXISTS);
  t.is(error?.details.reason, "EMAIL_TAKEN");
  t.deepEqual(error?.details.metadata, { email });
  t.is(await count(), 1);
});

test("CreateUser refuses a missing user", async (t) => {
  const { handlers, count } = await setup(t);
  await expectInvalid(
    t,
    handlers.createUser(CreateUserRequest.fromPartial({}), ctx("CreateUser")),
    ["user"],
  );
  t.is(await count(), 0);
});

const badUsers: [string, { email: string; displayName: string }, string[]][] = [
  ["an empty email", { email: "", displayName: "Ada" }, ["user.email"]],
  ["a 2-character email", { email: "a@", displayName: "Ada" }, ["user.email"]],
  ["a 255-character email", { email: emailOf(255), displayName: "Ada" }, ["user.email"]],
  ["an email without @", { email: "ada.example.com", displayName: "Ada" }, ["user.email"]],
  ["an empty display name", { email: "ada@example.com", displayName: "" }, ["user.display_name"]],
  ["an email without a local part", { email: "@example.com", displayName: "Ada" }, ["user.email"]],
  ["an email without a domain", { email: "ada@", displayName: "Ada" }, ["user.email"]],
  [
    "an email with a space",
    { email: "ada lovelace@example.com", displayName: "Ada" },
    ["user.email"],
  ],
  [
    "an email with a line break",
    { email: "ada@example.com\n", displayName: "Ada" },
    ["user.email"],
  ],
  [
    "an email with a bidi control",
    { email: "ada\u202e@example.com", displayName: "Ada" },
    ["user.email"],
  ],
  [
    "an email of 254 characters that NFKC makes thousands of bytes",
    { email: `${"\ufdfa".repeat(250)}@x.c`, displayName: "Ada" },
    ["user.email"],
  ],
  [
    "a display name of spaces",
    { email: "ada@example.com", displayName: "  \t " },
    ["user.display_name"],
  ],
  [
    "a display name of invisible characters",
    { email: "ada@example.com", displayName: "\u200b\u2066\u2069" },
    ["user.display_name"],
  ],
  [
    "a display name with a line break",
    { email: "ada@example.com", displayName: "Ada\nLovelace" },
    ["user.display_name"],
  ],
  [
    "a 101-character display name",
    { email: "ada@example.com", displayName: chars(101) },
    ["user.display_name"],
  ],
  ["both fields empty", { email: "", displayName: "" }, ["user.email", "user.display_name"]],
];

for (const [name, fields, violations] of badUsers) {
  test(`CreateUser refuses ${name} and writes nothing`, async (t) => {
    const { handlers, count } = await setup(t);
    await expectInvalid(
      t,
      handlers.createUser(CreateUserRequest.fromPartial({ user: fields }), ctx("CreateUser")),
      violations,
    );
    t.is(await count(), 0);
  });
}

test("CreateUser refuses an email taken by another user, whatever its case", async (t) => {
  const { create, count } = await setup(t);
  await create("ada@example.com");
  for (const email of ["ada@example.com", "ADA@EXAMPLE.COM", "Ada@Example.Com"]) {
    const error = await t.throwsAsync(create(email), { instanceOf: ServiceError });
    t.is(error?.code, Code.ALREADY_EXISTS);
    t.is(error?.details.reason, "EMAIL_TAKEN");
    t.deepEqual(error?.details.metadata, { email });
  }
  t.is(await count(), 1);
});

test("CreateUser refuses an email taken in a case with another lower case of a letter", async (t) => {
  const { create, count } = await setup(t);
  await create("sam@example.com");
  await create("ασ@example.gr");
  await create("straße@example.de");
  const taken = ["ſam@example.com", "SAM@example.com", "ΑΣ@example.gr", "ας@example.gr"];
  for (const email of [...taken, "STRAẞE@example.de", "STRASSE@example.de"]) {
    const error = await t.throwsAsync(create(email), { instanceOf: ServiceError });
    t.is(error?.details.reason, "EMAIL_TAKEN", email);
  }
  t.is(await count(), 3);
});

test("CreateUser refuses an email taken in another Unicode form of the same text", async (t) => {
  const { create, count } = await setup(t);
  await create("jos\u00e9@example.com");
  await create("ada@example.com");
  await create("fiona@example.com");
  const taken = ["jose\u0301@example.com", "JOSE\u0301@example.com", "\uff41da@example.com"];
  for (const email of [...taken, "\ufb01ona@example.com"]) {
    const error = await t.throwsAsync(create(email), { instanceOf: ServiceError });
    t.is(error?.details.reason, "EMAIL_TAKEN", email);
  }
  t.is(await count(), 3);
});

test("CreateUser accepts names and emails in any script", async (t) => {
  const { create } = await setup(t);
  t.is((await create("用户@例子.中国", "李 小龙")).displayName, "李 小龙");
  t.is((await create("زهرة@مثال.مصر", "زهرة")).email, "زهرة@مثال.مصر");
  t.is((await create("a@b@c", "🙂")).displayName, "🙂");
});

// GetUser

test("GetUser refuses an empty or too long id", async (t) => {
  const { handlers } = await setup(t);
  for (const userId of ["", chars(65)]) {
    await expectInvalid(
      t,
      handlers.getUser(GetUserRequest.fromPartial({ userId }), ctx("GetUser")),
      ["user_id"],
    );
  }
});

test("GetUser of an unknown id is NOT_FOUND with reason USER_NOT_FOUND", async (t) => {
  const { handlers } = await setup(t);
  const error = await t.throwsAsync(
    handlers.getUser(GetUserRequest.fromPartial({ userId: "usr_missing" }), ctx("GetUser")),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.NOT_FOUND);
  t.is(error?.details.reason, "USER_NOT_FOUND");
  t.deepEqual(error?.details.metadata, { user_id: "usr_missing" });
});

test("GetUser accepts a 64-character id", async (t) => {
  const { handlers } = await setup(t);
  const error = await t.throwsAsync(
    handlers.getUser(GetUserRequest.fromPartial({ userId: chars(64) }), ctx("GetUser")),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.NOT_FOUND, "a 64-character id passes validation");
});

// ListUsers

test("ListUsers pages through every user oldest first", async (t) => {
  const { handlers, create } = await setup(t);
  const created: string[] = [];
  for (let i = 0; i < 7; i++) created.push((await create(`u${i}@example.com`)).userId);

  const seen: string[] = [];
  const sizes: number[] = [];
  let pageToken = "";
  do {
    const page = await handlers.listUsers(
      ListUsersRequest.fromPartial({ pageSize: 3, pageToken }),
      ctx("ListUsers"),
    );
    sizes.push(page.users.length);
    seen.push(...page.users.map((u) => u.userId));
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  t.deepEqual(sizes, [3, 3, 1]);
  t.deepEqual(seen, created);
});

test("ListUsers with an exact multiple of the page size ends without an empty page", async (t) => {
  const { handlers, create } = await setup(t);
  for (let i = 0; i < 4; i++) await create(`u${i}@example.com`);
  const first = await handlers.listUsers(
    ListUsersRequest.fromPartial({ pageSize: 2 }),
    ctx("ListUsers"),
  );
  t.not(first.nextPageToken, "");
  const second = await handlers.listUsers(
    ListUsersRequest.fromPartial({ pageSize: 2, pageToken: first.nextPageToken }),
    ctx("ListUsers"),
  );
  t.is(second.users.length, 2);
  t.is(second.nextPageToken, "");
});

test("ListUsers with page_size 0 uses the default of 50", async (t) => {
  const { handlers, create } = await setup(t);
  for (let i = 0; i < 51; i++) await create(`u${i}@example.com`);
  const page = await handlers.listUsers(ListUsersRequest.fromPartial({}), ctx("ListUsers"));
  t.is(page.users.length, 50);
  t.not(page.nextPageToken, "");
  const huge = await handlers.listUsers(
    ListUsersRequest.fromPartial({ pageSize: 1_000_000 }),
    ctx("ListUsers"),
  );
  t.is(huge.users.length, 51, "a page size above 1000 is clamped, not refused");
  t.is(huge.nextPageToken, "");
});

test("ListUsers of an empty table is an empty last page", async (t) => {
  const { handlers } = await setup(t);
  const page = await handlers.listUsers(ListUsersRequest.fromPartial({}), ctx("ListUsers"));
  t.deepEqual(page, { users: [], nextPageToken: "" });
});

test("ListUsers refuses a negative page_size", async (t) => {
  const { handlers } = await setup(t);
  await expectInvalid(
    t,
    handlers.listUsers(ListUsersRequest.fromPartial({ pageSize: -1 }), ctx("ListUsers")),
    ["page_size"],
  );
});

test("ListUsers refuses page tokens it never issued", async (t) => {
  const { handlers, create } = await setup(t);
  for (let i = 0; i < 3; i++) await create(`u${i}@example.com`);
  const { nextPageToken: real } = await handlers.listUsers(
    ListUsersRequest.fromPartial({ pageSize: 1 }),
    ctx("ListUsers"),
  );
  t.not(real, "");
  const forged = [
    "garbage",
    "a.b",
    ...tamperedTokens(real),
    // Well-formed tokens of other lists, as ListProducts and ListOrders issue them.
    encodePageToken("/shop.product.v1.ProductService/ListProducts", 1, { inStockOnly: false }),
    encodePageToken("/shop.order.v1.OrderService/ListOrders", 1, { userId: "" }),
    // Another list without a filter, as a service of `npm run new-service` issues them: its
    // cursor is a row of another table.
    encodePageToken("/shop.payment.v1.PaymentService/ListPayments", 1),
  ];
  for (const pageToken of forged) {
    await expectInvalid(
      t,
      handlers.listUsers(ListUsersRequest.fromPartial({ pageToken }), ctx("ListUsers")),
      ["page_token"],
      "INVALID_PAGE_TOKEN",
    );
  }
});

// UpdateUser

const update = (user: Partial<User>, updateMask: string[] | undefined) =>
  UpdateUserRequest.fromPartial({ user, updateMask });

test("UpdateUser changes only the masked fields and advances update_time", async (t) => {
  const { handlers, create } = await setup(t);
  const ada = await create("ada@example.com", "Ada");
  while (Date.now() <= (ada.createTime?.getTime() ?? 0)) await new Promise(setImmediate);

  const { user: renamed } = await handlers.updateUser(
    update({ userId: ada.userId, email: "ignored@example.com", displayName: "Countess" }, [
      "display_name",
    ]),
    ctx("UpdateUser"),
  );
  t.is(renamed?.displayName, "Countess");
  t.is(renamed?.email, "ada@example.com", "email was not in the mask");
  t.deepEqual(renamed?.createTime, ada.createTime);
  t.true((renamed?.updateTime?.getTime() ?? 0) > (ada.createTime?.getTime() ?? 0));

  const { user: moved } = await handlers.updateUser(
    update({ userId: ada.userId, email: "countess@example.com", displayName: "" }, ["email"]),
    ctx("UpdateUser"),
  );
  t.is(moved?.email, "countess@example.com");
  t.is(moved?.displayName, "Countess", "an empty display_name outside the mask is ignored");

  const { user: read } = await handlers.getUser(
    GetUserRequest.fromPartial({ userId: ada.userId }),
    ctx("GetUser"),
  );
  t.deepEqual(read, moved);
});

test("UpdateUser that changes nothing leaves update_time; a new case of the email moves it", async (t) => {
  const { handlers, create } = await setup(t);
  const ada = await create("ada@example.com", "Ada");
  while (Date.now() <= (ada.createTime?.getTime() ?? 0)) await new Promise(setImmediate);

  const { user: same } = await handlers.updateUser(
    update(ada, ["email", "display_name"]),
    ctx("UpdateUser"),
  );
  t.deepEqual(same, ada, "the same values: nothing changed, update_time included");

  const { user: recased } = await handlers.updateUser(
    update({ ...ada, email: "Ada@example.com" }, ["email", "display_name"]),
    ctx("UpdateUser"),
  );
  t.is(recased?.email, "Ada@example.com");
  t.true((recased?.updateTime?.getTime() ?? 0) > (ada.updateTime?.getTime() ?? 0));
});

test("UpdateUser frees the old email and may change the case of its own", async (t) => {
  const { handlers, create } = await setup(t);
  const ada = await create("ada@example.com");
  const { user } = await handlers.updateUser(
    update({ userId: ada.userId, email: "ADA@example.com" }, ["email"]),
    ctx("UpdateUser"),
  );
  t.is(user?.email, "ADA@example.com");
  await handlers.updateUser(
    update({ userId: ada.userId, email: "lovelace@example.com" }, ["email"]),
    ctx("UpdateUser"),
  );
  t.is((await create("ada@example.com")).email, "ada@example.com");
});

test("UpdateUser to an email another user has is ALREADY_EXISTS and changes nothing", async (t) => {
  const { handlers, create } = await setup(t);
  await create("ada@example.com");
  const grace = await create("grace@example.com", "Grace");
  const error = await t.throwsAsync(
    handlers.updateUser(
      update({ userId: grace.userId, email: "ADA@EXAMPLE.COM", displayName: "Ada" }, [
        "email",
        "display_name",
      ]),
      ctx("UpdateUser"),
    ),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.ALREADY_EXISTS);
  t.is(error?.details.reason, "EMAIL_TAKEN");
  const { user } = await handlers.getUser(
    GetUserRequest.fromPartial({ userId: grace.userId }),
    ctx("GetUser"),
  );
  t.deepEqual(user, grace);
});

test("UpdateUser accepts an email whose lowercase form is longer than 254 characters", async (t) => {
  const { handlers, create, read } = await setup(t);
  const ada = await create("ada@example.com");
  const grace = await create("grace@example.com", "Grace");
  const email = dottedEmailOf(254);
  const { user: moved } = await handlers.updateUser(
    update({ userId: ada.userId, email }, ["email"]),
    ctx("UpdateUser"),
  );
  t.is(moved?.email, email);
  t.deepEqual(await read(ada.userId), moved);

  // Its key still makes it unique, whatever the case.
  const error = await t.throwsAsync(
    handlers.updateUser(
      update({ userId: grace.userId, email: dottedEmailOf(254, "@X.C") }, ["email"]),
      ctx("UpdateUser"),
    ),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.ALREADY_EXISTS);
  t.is(error?.details.reason, "EMAIL_TAKEN");
  t.deepEqual(await read(grace.userId), grace);
});

test("UpdateUser of an unknown user is NOT_FOUND with reason USER_NOT_FOUND", async (t) => {
  const { handlers } = await setup(t);
  const error = await t.throwsAsync(
    handlers.updateUser(
      update({ userId: "usr_missing", displayName: "X" }, ["display_name"]),
      ctx("UpdateUser"),
    ),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.NOT_FOUND);
  t.is(error?.details.reason, "USER_NOT_FOUND");
});

const badUpdates: [string, Partial<User> | undefined, string[] | undefined, string[]][] = [
  ["a missing user", undefined, ["display_name"], ["user"]],
  ["an empty user_id", { userId: "", displayName: "X" }, ["display_name"], ["user.user_id"]],
  [
    "a 65-character user_id",
    { userId: chars(65), displayName: "X" },
    ["display_name"],
    ["user.user_id"],
  ],
  ["a missing mask", { userId: "usr_1", displayName: "X" }, undefined, ["update_mask"]],
  ["an empty mask", { userId: "usr_1", displayName: "X" }, [], ["update_mask"]],
  ["an unknown path", { userId: "usr_1" }, ["phone"], ["update_mask"]],
  ["a camelCase path", { userId: "usr_1", displayName: "X" }, ["displayName"], ["update_mask"]],
  ["the immutable user_id", { userId: "usr_1" }, ["user_id"], ["update_mask"]],
  ["the output-only create_time", { userId: "usr_1" }, ["create_time"], ["update_mask"]],
  ["the output-only update_time", { userId: "usr_1" }, ["update_time"], ["update_mask"]],
  ["an email without @", { userId: "usr_1", email: "nope" }, ["email"], ["user.email"]],
  ["an email with a space", { userId: "usr_1", email: "a b@c.d" }, ["email"], ["user.email"]],
  [
    "a blank display_name",
    { userId: "usr_1", displayName: "\u3000" },
    ["display_name"],
    ["user.display_name"],
  ],
  [
    "an empty display_name",
    { userId: "usr_1", displayName: "" },
    ["display_name"],
    ["user.display_name"],
  ],
  [
    "a 101-character display_name",
    { userId: "usr_1", displayName: chars(101) },
    ["display_name"],
    ["user.display_name"],
  ],
  [
    "a bad path next to a good one",
    { userId: "usr_1", displayName: "X" },
    ["display_name", "user_id"],
    ["update_mask"],
  ],
];

for (const [name, user, mask, violations] of badUpdates) {
  test(`UpdateUser refuses ${name} and changes nothing`, async (t) => {
    const { handlers, create } = await setup(t);
    const existing = await create("ada@example.com", "Ada");
    const target = user && {
      ...user,
      userId: user.userId === "usr_1" ? existing.userId : user.userId,
    };
    await expectInvalid(
      t,
      handlers.updateUser(
        UpdateUserRequest.fromPartial({ user: target, updateMask: mask }),
        ctx("UpdateUser"),
      ),
      violations,
    );
    const { user: after } = await handlers.getUser(
      GetUserRequest.fromPartial({ userId: existing.userId }),
      ctx("GetUser"),
    );
    t.deepEqual(after, existing);
  });
}

// DeleteUser

test("DeleteUser removes the user and frees the email", async (t) => {
  const { handlers, create, count } = await setup(t);
  const ada = await create("ada@example.com");
  const other = await create("grace@example.com");
  t.deepEqual(
    await handlers.deleteUser(
      DeleteUserRequest.fromPartial({ userId: ada.userId }),
      ctx("DeleteUser"),
    ),
    {},
  );
  const error = await t.throwsAsync(
    handlers.getUser(GetUserRequest.fromPartial({ userId: ada.userId }), ctx("GetUser")),
    { instanceOf: ServiceError },
  );
  t.is(error?.code, Code.NOT_FOUND);
  t.is(await count(), 1);
  t.is(
    (await handlers.getUser(GetUserRequest.fromPartial({ userId: other.userId }), ctx("GetUser")))
      .user?.userId,
    other.userId,
  );
  t.not((await create("ADA@example.com")).userId, ada.userId);
});

test("DeleteUser of an unknown or already deleted user is NOT_FOUND", async (t) => {
  const { handlers, create } = await setup(t);
  const ada = await create("ada@example.com");
  await handlers.deleteUser(
    DeleteUserRequest.fromPartial({ userId: ada.userId }),
    ctx("DeleteUser"),
  );
  for (const userId of [ada.userId, "usr_missing"]) {
    const error = await t.throwsAsync(
      handlers.deleteUser(DeleteUserRequest.fromPartial({ userId }), ctx("DeleteUser")),
      { instanceOf: ServiceError },
    );
    t.is(error?.code, Code.NOT_FOUND);
    t.is(error?.details.reason, "USER_NOT_FOUND");
  }
});

test("DeleteUser refuses an empty or too long id", async (t) => {
  const { handlers, create, count } = await setup(t);
  await create("ada@example.com");
  for (const userId of ["", chars(65)]) {
    await expectInvalid(
      t,
      handlers.deleteUser(DeleteUserRequest.fromPartial({ userId }), ctx("DeleteUser")),
      ["user_id"],
    );
  }
  t.is(await count(), 1);
});
