// UserService's UpdateUser and DeleteUser called directly, each test on its own database (in
// memory on SQLite).
import test from "ava";
import {
  DeleteUserRequest,
  GetUserRequest,
  UpdateUserRequest,
  type User,
} from "../../gen/ts/shop/user/v1/user.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { expectInvalid } from "../../test/helpers/status.js";
import { chars, ctx, dottedEmailOf, setup } from "./test-setup.js";

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

test("UpdateUser moves update_time on past the row's own, even one ahead of this call's clock", async (t) => {
  // A write reads the clock before it waits for the row: one that waited behind a later write
  // finds an update_time ahead of its own `now`.
  const { db, handlers, create } = await setup(t);
  const ada = await create("ada@example.com", "Ada");
  const ahead = Date.now() + 60_000;
  await db("users").where({ user_id: ada.userId }).update({ update_time: ahead });
  const { user } = await handlers.updateUser(
    update({ userId: ada.userId, displayName: "Countess" }, ["display_name"]),
    ctx("UpdateUser"),
  );
  t.is(user?.updateTime?.getTime(), ahead + 1);
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
