// UserService's CreateUser called directly, each test on its own database (in memory on SQLite).
import test from "ava";
import { CreateUserRequest, GetUserRequest } from "../../gen/ts/shop/user/v1/user.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { expectInvalid } from "../../test/helpers/status.js";
import { chars, ctx, dottedEmailOf, setup } from "./test-setup.js";

/** A valid email of exactly `n` characters. */
const emailOf = (n: number) => `${chars(n - "@example.com".length, "e")}@example.com`;
const codePoints = (text: string) => [...text].length;

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

test('CreateUser accepts an "@" inside a quoted local part', async (t) => {
  const { create } = await setup(t);
  t.is((await create('"ada@home"@example.com')).email, '"ada@home"@example.com');
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
  ["an email with two @", { email: "ada@home@example.com", displayName: "Ada" }, ["user.email"]],
  [
    "an email with a full-width @ besides its @",
    { email: "ada@home\uff20example.com", displayName: "Ada" },
    ["user.email"],
  ],
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
    // It would look like ada@example.com, and be another account.
    "an email with a character that shows nothing",
    { email: "ad\u034fa@example.com", displayName: "Ada" },
    ["user.email"],
  ],
  [
    "an email with a blank braille pattern",
    { email: "a\u2800b@x.com", displayName: "Ada" },
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
    "a display name of a Hangul filler",
    { email: "ada@example.com", displayName: "\u3164" },
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
  t.is((await create("a@b.c", "🙂")).displayName, "🙂");
});
