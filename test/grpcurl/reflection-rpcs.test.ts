// grpcurl conformance, part one: list and describe over server reflection (v1 and v1alpha), and
// every rpc of every service, through the real grpcurl with the schema from reflection only,
// directly and through Envoy (test/helpers/grpcurl.ts).
//
// Tests run concurrently, so each makes its own data. The replicas of a service share one
// database, so what a call wrote is there for the next call whichever replica Envoy picks; only a
// watch is not told of a change made on another replica and sees it on its next poll of the
// database (SHOP_WATCH_POLL_MS, 1 s).
import { spawn } from "node:child_process";
import test, { type ExecutionContext } from "ava";
import { repoRoot, tool } from "../../scripts/lib/launcher.js";
import { ADMIN_TOKEN, authHeader } from "../helpers/credentials.js";
import {
  assertErrorInfo,
  CODES,
  CONTRACT,
  each,
  eachFront,
  exitCodeFor,
  grpcurl,
  HEALTH,
  INFRA_SERVICES,
  INVENTORY,
  KINDS,
  LOCAL_PROTOS,
  launchTargets,
  messages,
  printedError,
  TARGETS,
  unique,
} from "../helpers/grpcurl.js";
import { type ReflectionVersion, reflect } from "../helpers/reflection.js";

launchTargets();

// ---------------------------------------------------------------------------------------------
// list and describe

eachFront(
  `list shows what is served there, ${HEALTH} and reflection, never the internal API`,
  async (t, front) => {
    const result = await grpcurl([front.address(), "list"], undefined, front.transport);
    t.is(result.code, 0, result.stderr);
    const listed = result.stdout.trim().split("\n").sort();
    // A port lists its own service; Envoy the whole public API, which it routes.
    const served = front.serving.filter((name) => name !== "");
    t.deepEqual(listed, [...served, ...INFRA_SERVICES].sort());
    t.false(listed.includes(INVENTORY), `${INVENTORY} listed to a caller outside the mesh`);
  },
);

for (const kind of KINDS) {
  const { service, rpcs } = CONTRACT[kind];
  const pkg = service.slice(0, service.lastIndexOf("."));

  each(`list and describe ${service} show every rpc with its types`, async (t, on) => {
    const methods = await on.grpcurl([on.address(kind), "list", service]);
    t.is(methods.code, 0, methods.stderr);
    t.deepEqual(
      methods.stdout.trim().split("\n").sort(),
      Object.keys(rpcs)
        .map((rpc) => `${service}.${rpc}`)
        .sort(),
    );

    const result = await on.grpcurl([on.address(kind), "describe", service]);
    t.is(result.code, 0, result.stderr);
    t.true(result.stdout.startsWith(`${service} is a service:\n`), result.stdout);
    const described = [
      ...result.stdout.matchAll(/^ {2}rpc (\w+) \( (.+?) \) returns \( (.+?) \)(?:;| \{)$/gm),
    ];
    t.deepEqual(described.map((m) => m[1]).sort(), Object.keys(rpcs).sort());
    for (const [, rpc, request, response] of described) {
      t.is(request, `.${pkg}.${rpc}Request`);
      t.is(response, `${rpc === "WatchOrder" ? "stream " : ""}.${pkg}.${rpc}Response`);
    }
    // Each rpc states its idempotency level; reflection serves the source comments too.
    t.is(
      [...result.stdout.matchAll(/^ {4}option idempotency_level = \w+;$/gm)].length,
      described.length,
    );
    t.regex(result.stdout, /^\/\/ .+\nservice \w+ \{$/m);
  });

  each(`describe each request message of ${service}`, async (t, on) => {
    for (const [rpc, fields] of Object.entries(rpcs)) {
      const type = `${pkg}.${rpc}Request`;
      const result = await on.grpcurl([on.address(kind), "describe", type]);
      t.is(result.code, 0, result.stderr);
      t.true(result.stdout.startsWith(`${type} is a message:\n`), result.stdout);
      t.regex(result.stdout, new RegExp(`^message ${rpc}Request \\{$`, "m"));
      // Options as declared, field_behavior among them: reflection serves the files as built.
      const declared = [
        ...result.stdout.matchAll(/^ {2}(?:repeated )?\S+ (\w+) = \d+(?: \[.+\])?;$/gm),
      ].map((m) => m[1]);
      t.deepEqual(declared.sort(), [...fields].sort(), result.stdout);
    }
  });
}

each(
  "describe a message from an imported file (google.rpc.ErrorInfo) over reflection",
  async (t, on) => {
    const result = await on.grpcurl([on.address("user"), "describe", "google.rpc.ErrorInfo"]);
    t.is(result.code, 0, result.stderr);
    t.regex(result.stdout, /^message ErrorInfo \{$/m);
    t.regex(result.stdout, /string reason = 1;/);
  },
);

// grpcurl and buf curl use v1alpha only when v1 is missing, so each version gets a raw stream.
for (const version of ["v1", "v1alpha"] satisfies ReflectionVersion[]) {
  each(
    `grpc.reflection.${version} by hand on the order service: list_services and file_containing_symbol`,
    async (t, on) => {
      const answers = await reflect(
        on.address("order"),
        version,
        [
          { list_services: "" },
          { file_containing_symbol: "shop.order.v1.OrderService" },
          { file_containing_symbol: "shop.nope.v1.Nope" },
        ],
        undefined,
        on.channel(),
      );
      t.deepEqual(
        answers.map((a) => a.kind),
        ["list_services_response", "file_descriptor_response", "error_response"],
      );
      const [listed, found, missing] = answers;
      t.true(listed?.services?.includes(CONTRACT.order.service));
      const [file] = found?.files ?? [];
      t.is(file?.name, "shop/order/v1/order.proto");
      t.is(file?.package, "shop.order.v1");
      t.deepEqual(
        file?.service.map((s) => s.name),
        ["OrderService"],
      );
      t.deepEqual(
        file?.service[0]?.method.map((m) => m.name).sort(),
        Object.keys(CONTRACT.order.rpcs).sort(),
      );
      t.is(missing?.error?.code, CODES.NotFound);

      // Every import, transitively, is served too, in the answer or by file_by_filename, as
      // grpcurl asks for what it lacks (option-only imports such as google/api/annotations.proto).
      const files = new Map((found?.files ?? []).map((f) => [f.name, f]));
      const unresolved = () =>
        [...new Set([...files.values()].flatMap((f) => f.dependency))].filter(
          (name) => !files.has(name),
        );
      for (let round = 0; round < 5 && unresolved().length > 0; round++) {
        const asked = unresolved();
        const more = await reflect(
          on.address("order"),
          version,
          asked.map((name) => ({ file_by_filename: name })),
          undefined,
          on.channel(),
        );
        more.forEach((answer, i) => {
          t.is(answer.kind, "file_descriptor_response", `${asked[i]}: ${answer.error?.message}`);
          t.is(answer.files?.[0]?.name, asked[i]);
          for (const f of answer.files ?? []) files.set(f.name, f);
        });
      }
      t.deepEqual(unresolved(), [], "imports that reflection does not serve");
      t.true(files.has("google/api/annotations.proto"));
    },
  );
}

// ---------------------------------------------------------------------------------------------
// UserService

each("CreateUser and GetUser", async (t, on) => {
  const user = await on.newUser(t);
  t.regex(user.userId, /^\S+$/);
  t.is(user.displayName, "Grpcurl Tester");
  const { user: got } = await on.call(t, "shop.user.v1.UserService/GetUser", {
    user_id: user.userId,
  });
  t.deepEqual(got, user);
  t.regex(got.createTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
});

each("UpdateUser changes only the fields named in update_mask", async (t, on) => {
  const user = await on.newUser(t);
  const { user: updated } = await on.call(t, "shop.user.v1.UserService/UpdateUser", {
    user: { user_id: user.userId, display_name: "Renamed", email: `other-${unique()}@example.com` },
    update_mask: { paths: ["display_name"] },
  });
  t.is(updated.userId, user.userId);
  t.is(updated.displayName, "Renamed");
  t.is(updated.email, user.email, "email was not in the mask");
  t.true(Date.parse(updated.updateTime) >= Date.parse(user.createTime));
  const { user: got } = await on.call(t, "shop.user.v1.UserService/GetUser", {
    user_id: user.userId,
  });
  t.deepEqual(got, updated);
});

each("ListUsers pages with page_size and page_token", async (t, on) => {
  const mine = [await on.newUser(t), await on.newUser(t), await on.newUser(t)].map((u) => u.userId);
  const seen: string[] = [];
  let token = "";
  let pages = 0;
  do {
    const page = await on.call(t, "shop.user.v1.UserService/ListUsers", {
      page_size: 2,
      page_token: token,
    });
    pages++;
    t.true((page.users ?? []).length <= 2, "page_size is a maximum");
    seen.push(...(page.users ?? []).map((u: { userId: string }) => u.userId));
    token = page.nextPageToken ?? "";
  } while (token && pages < 1_000);
  t.true(pages >= 2, "three users do not fit on one page of two");
  t.is(new Set(seen).size, seen.length, "no user on two pages");
  for (const id of mine) t.true(seen.includes(id), `${id} not listed`);
});

each("DeleteUser removes the user", async (t, on) => {
  const user = await on.newUser(t);
  t.deepEqual(
    await on.call(t, "shop.user.v1.UserService/DeleteUser", { user_id: user.userId }),
    {},
  );
  const gone = await on.failure(
    t,
    "shop.user.v1.UserService/GetUser",
    { user_id: user.userId },
    "NotFound",
  );
  assertErrorInfo(t, gone, "USER_NOT_FOUND", "shop.user.v1");
  await on.failure(t, "shop.user.v1.UserService/DeleteUser", { user_id: user.userId }, "NotFound");
});

// ---------------------------------------------------------------------------------------------
// ProductService

each("CreateProduct and GetProduct keep int64 money exact (2^53 - 1)", async (t, on) => {
  const product = await on.newProduct(t, { stock: 7, amountMinor: "9007199254740991" });
  t.is(product.stockQuantity, 7);
  t.deepEqual(product.price, { currencyCode: "EUR", amountMinor: "9007199254740991" });
  const { product: got } = await on.call(t, "shop.product.v1.ProductService/GetProduct", {
    product_id: product.productId,
  });
  t.deepEqual(got, product);
});

each("UpdateProduct changes only the fields named in update_mask", async (t, on) => {
  const product = await on.newProduct(t, { stock: 5 });
  const { product: updated } = await on.call(t, "shop.product.v1.ProductService/UpdateProduct", {
    product: {
      product_id: product.productId,
      name: "Renamed mug",
      stock_quantity: 9,
      price: { currency_code: "USD", amount_minor: "1" },
    },
    update_mask: { paths: ["name", "stock_quantity"] },
  });
  t.is(updated.name, "Renamed mug");
  t.is(updated.stockQuantity, 9);
  t.deepEqual(updated.price, product.price, "price was not in the mask");
  t.is(await on.stockOf(t, product.productId), 9);
});

each("ListProducts pages and filters with in_stock_only", async (t, on) => {
  const empty = await on.newProduct(t, { stock: 0 });
  const stocked = [await on.newProduct(t, { stock: 3 }), await on.newProduct(t, { stock: 4 })];
  const list = async (inStockOnly: boolean) => {
    const seen: { productId: string; stockQuantity?: number }[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await on.call(t, "shop.product.v1.ProductService/ListProducts", {
        page_size: 2,
        page_token: token,
        in_stock_only: inStockOnly,
      });
      pages++;
      t.true((page.products ?? []).length <= 2);
      seen.push(...(page.products ?? []));
      token = page.nextPageToken ?? "";
    } while (token && pages < 1_000);
    t.true(pages >= 2);
    return seen;
  };
  const inStock = await list(true);
  const ids = inStock.map((p) => p.productId);
  for (const p of stocked) t.true(ids.includes(p.productId));
  t.false(ids.includes(empty.productId), "in_stock_only hides a product with no stock");
  t.true(inStock.every((p) => (p.stockQuantity ?? 0) > 0));
  t.true((await list(false)).some((p) => p.productId === empty.productId));
});

// The internal API, on the development profile's plaintext loopback ports, where the machine is the
// boundary. Reflection does not list it there, so grpcurl reads the schema from the protos. The
// refusals at the edge and over mutual TLS are test/security/refusals.test.ts.
const direct = TARGETS[0] as (typeof TARGETS)[number];
const inventory = (t: ExecutionContext, rpc: string, body: object) =>
  direct.call(t, `${INVENTORY}/${rpc}`, body, {
    flags: LOCAL_PROTOS,
    to: direct.address("product"),
  });

test("direct: ReserveStock holds units and CommitReservation keeps them", async (t) => {
  const product = await direct.newProduct(t, { stock: 5 });
  const reservationId = `res-${unique()}`;
  const body = {
    reservation_id: reservationId,
    lines: [{ product_id: product.productId, quantity: 2 }],
    ttl: "30s",
  };
  const before = Date.now();
  const { reservation } = await inventory(t, "ReserveStock", body);
  t.is(reservation.reservationId, reservationId);
  t.is(reservation.state, "RESERVATION_STATE_HELD");
  t.deepEqual(reservation.lines, [
    { productId: product.productId, quantity: 2, unitPrice: product.price },
  ]);
  const ttl = Date.parse(reservation.expireTime) - Date.parse(reservation.createTime);
  t.is(ttl, 30_000);
  t.true(Date.parse(reservation.createTime) >= before - 1_000);
  t.is(await direct.stockOf(t, product.productId), 3, "held units are taken");

  const again = await inventory(t, "ReserveStock", body);
  t.deepEqual(again.reservation, reservation, "same id and lines: the same reservation");
  t.is(await direct.stockOf(t, product.productId), 3);

  const { reservation: committed } = await inventory(t, "CommitReservation", {
    reservation_id: reservationId,
  });
  t.is(committed.state, "RESERVATION_STATE_COMMITTED");
  t.is(await direct.stockOf(t, product.productId), 3);
});

test("direct: ReleaseReservation gives held units back", async (t) => {
  const product = await direct.newProduct(t, { stock: 5 });
  const reservationId = `res-${unique()}`;
  await inventory(t, "ReserveStock", {
    reservation_id: reservationId,
    lines: [{ product_id: product.productId, quantity: 4 }],
  });
  t.is(await direct.stockOf(t, product.productId), 1);
  const { reservation } = await inventory(t, "ReleaseReservation", {
    reservation_id: reservationId,
  });
  t.is(reservation.state, "RESERVATION_STATE_RELEASED");
  t.is(await direct.stockOf(t, product.productId), 5);
  const again = await inventory(t, "ReleaseReservation", { reservation_id: reservationId });
  t.is(again.reservation.state, "RESERVATION_STATE_RELEASED", "releasing twice is a no-op");
  t.is(await direct.stockOf(t, product.productId), 5);
});

// ---------------------------------------------------------------------------------------------
// OrderService

each("CreateOrder, GetOrder and ListOrders", async (t, on) => {
  const { user, product, order, requestId } = await on.newOrder(t, 2, 5);
  t.is(order.userId, user.userId);
  t.is(order.requestId, requestId);
  t.deepEqual(order.lines, [
    { productId: product.productId, quantity: 2, unitPrice: product.price },
  ]);
  t.deepEqual(order.total, { currencyCode: "EUR", amountMinor: "2500" });
  t.is(await on.stockOf(t, product.productId), 3);

  const { order: got } = await on.call(t, "shop.order.v1.OrderService/GetOrder", {
    order_id: order.orderId,
  });
  t.is(got.orderId, order.orderId);
  t.is(got.state, "ORDER_STATE_CONFIRMED");

  const second = await on.call(t, "shop.order.v1.OrderService/CreateOrder", {
    user_id: user.userId,
    lines: [{ product_id: product.productId, quantity: 1 }],
    request_id: `req-${unique()}`,
  });
  const first = await on.call(t, "shop.order.v1.OrderService/ListOrders", {
    user_id: user.userId,
    page_size: 1,
  });
  t.is(first.orders.length, 1);
  t.truthy(first.nextPageToken);
  const rest = await on.call(t, "shop.order.v1.OrderService/ListOrders", {
    user_id: user.userId,
    page_size: 1,
    page_token: first.nextPageToken,
  });
  t.is(rest.orders.length, 1);
  t.deepEqual(
    [first.orders[0].orderId, rest.orders[0].orderId],
    [second.order.orderId, order.orderId],
    "newest first",
  );
  if (rest.nextPageToken) {
    const last = await on.call(t, "shop.order.v1.OrderService/ListOrders", {
      user_id: user.userId,
      page_size: 1,
      page_token: rest.nextPageToken,
    });
    t.deepEqual(last, {}, "no third order");
  }
});

each("CreateOrder with a used request_id returns the same order", async (t, on) => {
  const { user, product, order, requestId } = await on.newOrder(t, 1, 5);
  const { order: again } = await on.call(t, "shop.order.v1.OrderService/CreateOrder", {
    user_id: user.userId,
    lines: [{ product_id: product.productId, quantity: 1 }],
    request_id: requestId,
  });
  t.is(again.orderId, order.orderId);
  t.is(await on.stockOf(t, product.productId), 4, "stock taken once");
});

each("CancelOrder returns the stock and is idempotent", async (t, on) => {
  const { product, order } = await on.newOrder(t, 2, 5);
  t.is(await on.stockOf(t, product.productId), 3);
  const { order: cancelled } = await on.call(t, "shop.order.v1.OrderService/CancelOrder", {
    order_id: order.orderId,
  });
  t.is(cancelled.state, "ORDER_STATE_CANCELLED");
  t.is(await on.stockOf(t, product.productId), 5);
  const { order: again } = await on.call(t, "shop.order.v1.OrderService/CancelOrder", {
    order_id: order.orderId,
  });
  t.deepEqual(again, cancelled);
  t.is(await on.stockOf(t, product.productId), 5);
});

// -max-time 4 rather than 2: grpcurl first fetches the schema over reflection, which on a loaded
// two-core machine can eat most of a 2 s budget before the first message.
each("WatchOrder sends the order as it is, then waits (-max-time 4 ends it)", async (t, on) => {
  const { order } = await on.newOrder(t);
  const started = Date.now();
  const result = await on.invoke(
    "shop.order.v1.OrderService/WatchOrder",
    { order_id: order.orderId },
    { flags: ["-max-time", "4"] },
  );
  t.true(Date.now() - started >= 3_900, "the stream stayed open until the deadline");
  t.is(result.code, exitCodeFor("DeadlineExceeded"), result.stderr);
  t.is(printedError(result.stderr).code, "DeadlineExceeded");
  const sent = messages(result.stdout);
  t.is(sent.length, 1, result.stdout);
  t.is(sent[0].order.orderId, order.orderId);
  t.is(sent[0].order.state, "ORDER_STATE_CONFIRMED");
});

each("WatchOrder on a cancelled order sends it once and ends by itself", async (t, on) => {
  const { order } = await on.newOrder(t);
  await on.call(t, "shop.order.v1.OrderService/CancelOrder", { order_id: order.orderId });
  const result = await on.invoke(
    "shop.order.v1.OrderService/WatchOrder",
    { order_id: order.orderId },
    { flags: ["-max-time", "20"] },
  );
  t.is(result.code, 0, result.stderr);
  const sent = messages(result.stdout);
  t.is(sent.length, 1, result.stdout);
  t.is(sent[0].order.state, "ORDER_STATE_CANCELLED");
});

each(
  "WatchOrder streams a cancellation to an open grpcurl, then the stream ends",
  async (t, on) => {
    const { order } = await on.newOrder(t);
    const watcher = spawn(
      tool("grpcurl"),
      [
        ...on.transport,
        ...["-H", authHeader(ADMIN_TOKEN)],
        "-max-time",
        "20",
        "-d",
        JSON.stringify({ order_id: order.orderId }),
        on.address("order"),
        "shop.order.v1.OrderService/WatchOrder",
      ],
      { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] },
    );
    t.teardown(() => {
      if (watcher.exitCode === null && watcher.signalCode === null) watcher.kill("SIGKILL");
    });
    let stdout = "";
    let stderr = "";
    watcher.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    const exited = new Promise<number | null>((resolve) => watcher.once("close", resolve));
    // Cancel only once the first message has arrived, so the change happens on an open stream.
    await new Promise<void>((resolve, reject) => {
      watcher.stdout.on("data", (chunk) => {
        stdout += chunk;
        if (/^\}$/m.test(stdout)) resolve();
      });
      void exited.then(() => reject(new Error(`grpcurl exited early: ${stderr}`)));
    });
    await on.call(t, "shop.order.v1.OrderService/CancelOrder", { order_id: order.orderId });
    t.is(await exited, 0, stderr);
    const states = messages(stdout).map((m) => m.order.state);
    t.is(states[0], "ORDER_STATE_CONFIRMED");
    t.is(states.at(-1), "ORDER_STATE_CANCELLED", stdout);
  },
);
