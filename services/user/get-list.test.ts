// UserService's GetUser and ListUsers called directly, each test on its own database (in memory
// on SQLite).
import test from "ava";
import { GetUserRequest, ListUsersRequest } from "../../gen/ts/shop/user/v1/user.js";
import { Code, ServiceError } from "../../kit/errors.js";
import { encodePageToken } from "../../kit/page-token.js";
import { tamperedTokens } from "../../test/helpers/page-tokens.js";
import { expectInvalid } from "../../test/helpers/status.js";
import { chars, ctx, setup } from "./test-setup.js";

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
