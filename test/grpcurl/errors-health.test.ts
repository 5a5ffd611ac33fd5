// grpcurl conformance, part two: error codes, exit codes and the google.rpc.Status details
// grpcurl prints, health checks, the same calls with local protos instead of reflection, and buf
// curl, directly and through Envoy (test/helpers/grpcurl.ts).
// Tests run concurrently, so each makes its own data. The replicas of a service share one
// database, so what a call wrote is there for the next call whichever replica Envoy picks; only a
// watch is not told of a change made on another replica and sees it on its next poll of the
// database (SHOP_WATCH_POLL_MS, 1 s).
import test, { type ExecutionContext } from "ava";
import {
  assertErrorInfo,
  CODES,
  type CodeName,
  detail,
  each,
  eachFront,
  exitCodeFor,
  grpcurl,
  HEALTH,
  INVENTORY,
  LOCAL_PROTOS,
  launchTargets,
  SHOP_SERVICES,
  type Target,
  unique,
} from "../helpers/grpcurl.js";

launchTargets();

// ---------------------------------------------------------------------------------------------
// Errors: codes, exit codes and the google.rpc.Status details grpcurl prints

each("GetUser of an unknown id: NotFound with ErrorInfo USER_NOT_FOUND", async (t, on) => {
  const error = await on.failure(
    t,
    "shop.user.v1.UserService/GetUser",
    { user_id: "usr_nope" },
    "NotFound",
  );
  t.is(exitCodeFor("NotFound"), 69);
  t.regex(error.message, /usr_nope/);
  assertErrorInfo(t, error, "USER_NOT_FOUND", "shop.user.v1", { user_id: "usr_nope" });
});

each(
  "CreateUser without an email: InvalidArgument with BadRequest fieldViolations",
  async (t, on) => {
    const error = await on.failure(
      t,
      "shop.user.v1.UserService/CreateUser",
      { user: { display_name: "No Email" } },
      "InvalidArgument",
    );
    t.is(exitCodeFor("InvalidArgument"), 67);
    const badRequest = detail(error, "BadRequest");
    t.truthy(badRequest, JSON.stringify(error.details));
    t.deepEqual(
      badRequest.fieldViolations.map((v: { field: string }) => v.field),
      ["user.email"],
    );
    t.true(badRequest.fieldViolations.every((v: { description: string }) => v.description !== ""));
    assertErrorInfo(t, error, "INVALID_ARGUMENT", "shop.user.v1");
  },
);

each(
  "CreateOrder beyond the stock: FailedPrecondition with PreconditionFailure, nothing held",
  async (t, on) => {
    const [user, product] = await Promise.all([on.newUser(t), on.newProduct(t, { stock: 3 })]);
    const error = await on.failure(
      t,
      "shop.order.v1.OrderService/CreateOrder",
      {
        user_id: user.userId,
        lines: [{ product_id: product.productId, quantity: 4 }],
        request_id: `req-${unique()}`,
      },
      "FailedPrecondition",
    );
    t.is(exitCodeFor("FailedPrecondition"), 73);
    assertErrorInfo(t, error, "INSUFFICIENT_STOCK", "shop.order.v1");
    const failure_ = detail(error, "PreconditionFailure");
    t.truthy(failure_, JSON.stringify(error.details));
    t.is(failure_.violations.length, 1);
    t.is(failure_.violations[0].type, "STOCK");
    t.is(failure_.violations[0].subject, product.productId);
    t.truthy(failure_.violations[0].description);
    t.is(await on.stockOf(t, product.productId), 3, "a failed order holds no stock");
  },
);

/** One error case per target: the code, one ErrorInfo, and the BadRequest field if any. */
function errorCase(
  title: string,
  make: (t: ExecutionContext, on: Target) => Promise<{ method: string; body: object }>,
  code: CodeName,
  reason: string,
  domain: string,
  field?: string,
): void {
  each(`${title}: ${code} ${reason}`, async (t, on) => {
    const { method, body } = await make(t, on);
    const error = await on.failure(t, method, body, code);
    assertErrorInfo(t, error, reason, domain);
    if (field !== undefined) {
      const fields = detail(error, "BadRequest")?.fieldViolations?.map(
        (v: { field: string }) => v.field,
      );
      t.deepEqual(fields, [field]);
    }
  });
}

const fixed = (method: string, body: object) => async () => ({ method, body });

errorCase(
  "CreateUser with a taken email",
  async (t: ExecutionContext, on: Target) => {
    const user = await on.newUser(t);
    return {
      method: "shop.user.v1.UserService/CreateUser",
      body: { user: { email: user.email, display_name: "Twin" } },
    };
  },
  "AlreadyExists",
  "EMAIL_TAKEN",
  "shop.user.v1",
);
errorCase(
  "ListUsers with a forged page_token",
  fixed("shop.user.v1.UserService/ListUsers", { page_token: "forged" }),
  "InvalidArgument",
  "INVALID_PAGE_TOKEN",
  "shop.user.v1",
  "page_token",
);
errorCase(
  "UpdateUser with user_id in the mask",
  async (t: ExecutionContext, on: Target) => {
    const user = await on.newUser(t);
    return {
      method: "shop.user.v1.UserService/UpdateUser",
      body: { user: { user_id: user.userId }, update_mask: { paths: ["user_id"] } },
    };
  },
  "InvalidArgument",
  "INVALID_ARGUMENT",
  "shop.user.v1",
  "update_mask",
);
errorCase(
  "GetProduct of an unknown id",
  fixed("shop.product.v1.ProductService/GetProduct", { product_id: "prd_nope" }),
  "NotFound",
  "PRODUCT_NOT_FOUND",
  "shop.product.v1",
);
errorCase(
  "GetOrder of an unknown id",
  fixed("shop.order.v1.OrderService/GetOrder", { order_id: "ord_nope" }),
  "NotFound",
  "ORDER_NOT_FOUND",
  "shop.order.v1",
);
errorCase(
  "CreateOrder for an unknown user",
  async (t: ExecutionContext, on: Target) => {
    const product = await on.newProduct(t);
    return {
      method: "shop.order.v1.OrderService/CreateOrder",
      body: { user_id: "usr_nope", lines: [{ product_id: product.productId, quantity: 1 }] },
    };
  },
  "NotFound",
  "USER_NOT_FOUND",
  "shop.order.v1",
);
errorCase(
  "CreateOrder reusing a request_id for a different order",
  async (t: ExecutionContext, on: Target) => {
    const { user, product, requestId } = await on.newOrder(t, 1, 5);
    return {
      method: "shop.order.v1.OrderService/CreateOrder",
      body: {
        user_id: user.userId,
        lines: [{ product_id: product.productId, quantity: 2 }],
        request_id: requestId,
      },
    };
  },
  "AlreadyExists",
  "REQUEST_ID_REUSED",
  "shop.order.v1",
);
errorCase(
  "WatchOrder without an order_id",
  fixed("shop.order.v1.OrderService/WatchOrder", {}),
  "InvalidArgument",
  "INVALID_ARGUMENT",
  "shop.order.v1",
  "order_id",
);

each("-format-error prints the google.rpc.Status as JSON", async (t, on) => {
  const result = await on.invoke(
    "shop.user.v1.UserService/GetUser",
    { user_id: "usr_nope" },
    { flags: ["-format-error"] },
  );
  t.is(result.code, exitCodeFor("NotFound"));
  const status = JSON.parse(result.stderr);
  t.is(status.code, CODES.NotFound);
  t.is(status.details.length, 1);
  t.like(status.details[0], {
    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
    reason: "USER_NOT_FOUND",
    domain: "shop.user.v1",
  });
});

// ---------------------------------------------------------------------------------------------
// grpc.health.v1

eachFront('Health/Check of "" and the services it reports on: SERVING', async (t, front, on) => {
  for (const service of front.serving) {
    const response = await on.call(t, `${HEALTH}/Check`, { service }, { to: front.address() });
    t.deepEqual(response, { status: "SERVING" }, `service "${service}"`);
  }
});

eachFront('Health/List: "" and the services it reports on, SERVING', async (t, front, on) => {
  const response = await on.call(t, `${HEALTH}/List`, {}, { to: front.address() });
  const statuses = Object.fromEntries(
    Object.entries(response.statuses as Record<string, { status: string }>).map(
      ([name, { status }]) => [name, status],
    ),
  );
  // A product replica lists its internal service too; the edge lists the public API alone.
  const listed = Object.keys(statuses).filter((name) => name !== INVENTORY);
  t.deepEqual(listed.sort(), [...front.serving].sort());
  if (on.name === "envoy") t.false(INVENTORY in statuses);
  for (const service of front.serving) t.is(statuses[service], "SERVING", `service "${service}"`);
});

eachFront("Health/Check of an unknown service: NotFound", async (t, front, on) => {
  const error = await on.failure(
    t,
    `${HEALTH}/Check`,
    { service: "shop.nope.v1.NopeService" },
    "NotFound",
    { to: front.address() },
  );
  t.regex(error.message, /shop\.nope\.v1\.NopeService/);
});

// ---------------------------------------------------------------------------------------------
// The same with local protos instead of reflection

// Needs no server: the schema comes from the files.
test("local protos (-proto, -import-path): list shows exactly the files' services", async (t) => {
  const result = await grpcurl([...LOCAL_PROTOS, "list"]);
  t.is(result.code, 0, result.stderr);
  t.deepEqual(result.stdout.trim().split("\n"), [...SHOP_SERVICES, INVENTORY].sort());
});

each("local protos: a call to each service", async (t, on) => {
  const local = { flags: LOCAL_PROTOS };
  const user = await on.newUser(t, local);
  const { user: got } = await on.call(
    t,
    "shop.user.v1.UserService/GetUser",
    { user_id: user.userId },
    local,
  );
  t.deepEqual(got, user);
  const product = await on.newProduct(t, { stock: 4, amountMinor: "300" }, local);
  t.is(product.stockQuantity, 4);
  const { order } = await on.call(
    t,
    "shop.order.v1.OrderService/CreateOrder",
    {
      user_id: user.userId,
      lines: [{ product_id: product.productId, quantity: 3 }],
      request_id: `req-${unique()}`,
    },
    local,
  );
  t.is(order.state, "ORDER_STATE_CONFIRMED");
  t.deepEqual(order.total, { currencyCode: "EUR", amountMinor: "900" });
});

each("local protos: error details decode with google/rpc/error_details.proto", async (t, on) => {
  const [user, product] = await Promise.all([on.newUser(t), on.newProduct(t, { stock: 1 })]);
  const body = {
    user_id: user.userId,
    lines: [{ product_id: product.productId, quantity: 2 }],
    request_id: `req-${unique()}`,
  };
  const error = await on.failure(
    t,
    "shop.order.v1.OrderService/CreateOrder",
    body,
    "FailedPrecondition",
    {
      flags: LOCAL_PROTOS,
    },
  );
  assertErrorInfo(t, error, "INSUFFICIENT_STOCK", "shop.order.v1");
  t.is(detail(error, "PreconditionFailure")?.violations?.[0]?.subject, product.productId);

  // Without error_details.proto grpcurl still shows the code, but cannot decode the details.
  const bare = LOCAL_PROTOS.slice(0, -2);
  const raw = await on.failure(
    t,
    "shop.order.v1.OrderService/CreateOrder",
    body,
    "FailedPrecondition",
    {
      flags: bare,
    },
  );
  t.true(raw.details.length >= 2);
  t.true(raw.details.every((d) => /is not recognized/.test(d["@error"]) && d["@value"]));
});

// ---------------------------------------------------------------------------------------------
// buf curl

for (const [name, flags] of [
  ["server reflection", []],
  ["--schema proto", ["--schema", "proto"]],
] as const) {
  each(`buf curl GetUser with ${name}`, async (t, on) => {
    const user = await on.newUser(t);
    const ok = await on.bufCurl(
      "shop.user.v1.UserService/GetUser",
      { user_id: user.userId },
      flags,
    );
    t.is(ok.code, 0, ok.stderr);
    t.deepEqual(JSON.parse(ok.stdout).user, user);

    // buf curl exits with the gRPC code shifted left by three bits.
    const missing = await on.bufCurl(
      "shop.user.v1.UserService/GetUser",
      { user_id: "usr_nope" },
      flags,
    );
    t.is(missing.code, CODES.NotFound << 3, missing.stderr);
    const status = JSON.parse(missing.stderr);
    t.is(status.code, "not_found");
    t.deepEqual(
      status.details.map((d: { type: string }) => d.type),
      ["google.rpc.ErrorInfo"],
    );
  });
}
