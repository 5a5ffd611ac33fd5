// grpcurl conformance: the real grpcurl (.tools/bin) against the real launcher, schema from server
// reflection only (plus one block with the local protos and one with buf curl). Every RPC of
// every service, the error codes and google.rpc.Status details grpcurl prints, and health checks.
// One launcher serves the whole file; tests run concurrently, so each makes its own data.
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { type ExecResult, exec } from "./helpers/exec.js";
import { type Launcher, startLauncher } from "./helpers/launch.js";

let shop: Launcher;

test.before(async () => {
  shop = await startLauncher({ args: ["--no-seed"] });
});

test.after.always(async () => {
  if (!shop) return;
  const code = await shop.stop();
  if (code !== 0) throw new Error(`the launcher exited ${code} after SIGINT:\n${shop.output()}`);
});

/** grpcurl's JSON output; tests check it field by field. */
// biome-ignore lint/suspicious/noExplicitAny: parsed JSON of many message types.
type Json = any;

type Kind = "user" | "product" | "order";

/** The contract: each service's rpcs and the fields of each request message. */
const CONTRACT: Record<Kind, { service: string; rpcs: Record<string, string[]> }> = {
  user: {
    service: "shop.user.v1.UserService",
    rpcs: {
      CreateUser: ["user"],
      GetUser: ["user_id"],
      ListUsers: ["page_size", "page_token"],
      UpdateUser: ["user", "update_mask"],
      DeleteUser: ["user_id"],
    },
  },
  product: {
    service: "shop.product.v1.ProductService",
    rpcs: {
      CreateProduct: ["product"],
      GetProduct: ["product_id"],
      ListProducts: ["page_size", "page_token", "in_stock_only"],
      UpdateProduct: ["product", "update_mask"],
      ReserveStock: ["reservation_id", "lines", "ttl"],
      CommitReservation: ["reservation_id"],
      ReleaseReservation: ["reservation_id"],
    },
  },
  order: {
    service: "shop.order.v1.OrderService",
    rpcs: {
      CreateOrder: ["user_id", "lines", "request_id"],
      GetOrder: ["order_id"],
      ListOrders: ["page_size", "page_token", "user_id"],
      CancelOrder: ["order_id"],
      WatchOrder: ["order_id"],
    },
  },
};
const KINDS = Object.keys(CONTRACT) as Kind[];
const HEALTH = "grpc.health.v1.Health";

/** gRPC status code numbers by the names grpcurl prints. */
const CODES = {
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  FailedPrecondition: 9,
} as const;
type CodeName = keyof typeof CODES;

/** grpcurl exits with 64 + the gRPC status code when the RPC fails. */
const exitCodeFor = (code: CodeName) => 64 + CODES[code];

const address = (kind: Kind) => shop.addresses[kind];
const kindOf = (method: string): Kind => {
  const kind = KINDS.find((k) => method.startsWith(`${CONTRACT[k].service}/`));
  if (!kind) throw new Error(`no service for ${method}`);
  return kind;
};

/** Local protos instead of reflection (error_details.proto so that details can be decoded). */
const LOCAL_PROTOS = [
  "-import-path",
  "proto",
  "-import-path",
  "node_modules/google-proto-files",
  "-proto",
  "shop/user/v1/user.proto",
  "-proto",
  "shop/product/v1/product.proto",
  "-proto",
  "shop/order/v1/order.proto",
  "-proto",
  "google/rpc/error_details.proto",
];

/**
 * At most this many grpcurl / buf processes at once. AVA starts all of this file's tests together;
 * unbounded, ~50 clients plus the three services on two cores push single RPCs past the order
 * service's 5 s dependency deadline.
 */
const MAX_CLIENTS = 4;
let running = 0;
const waiting: (() => void)[] = [];

async function limited<T>(work: () => Promise<T>): Promise<T> {
  if (running >= MAX_CLIENTS) await new Promise<void>((resolve) => waiting.push(resolve));
  else running++;
  try {
    return await work();
  } finally {
    const next = waiting.shift();
    if (next) next();
    else running--;
  }
}

function grpcurl(args: readonly string[], timeoutMs = 30_000): Promise<ExecResult> {
  return limited(() =>
    exec(tool("grpcurl"), ["-plaintext", ...args], { cwd: repoRoot, timeoutMs }),
  );
}

interface CallOptions {
  /** Flags before -d, e.g. LOCAL_PROTOS or ["-max-time", "2"]. */
  flags?: readonly string[];
  /** Send to this address instead of the method's own service. */
  to?: string;
}

function invoke(method: string, body: object, options: CallOptions = {}): Promise<ExecResult> {
  return grpcurl([
    ...(options.flags ?? []),
    "-d",
    JSON.stringify(body),
    options.to ?? address(kindOf(method)),
    method,
  ]);
}

/** Calls a unary method and returns its JSON response, failing the test if grpcurl did not exit 0. */
async function call(
  t: ExecutionContext,
  method: string,
  body: object,
  options?: CallOptions,
): Promise<Json> {
  const result = await invoke(method, body, options);
  if (result.code !== 0) {
    t.fail(`${method} ${JSON.stringify(body)} exited ${result.code}:\n${result.stderr}`);
    throw new Error(`${method} failed`);
  }
  t.is(result.stderr, "", `${method} wrote to stderr`);
  return JSON.parse(result.stdout);
}

/** The JSON messages of a server stream, as grpcurl prints them one after another. */
function messages(stdout: string): Json[] {
  return stdout
    .trim()
    .split(/\n(?=\{)/)
    .filter(Boolean)
    .map((text) => JSON.parse(text));
}

interface PrintedError {
  code: string;
  message: string;
  details: Json[];
}

/**
 * Parses what grpcurl prints on stderr for a failed RPC:
 *
 *   ERROR:
 *     Code: NotFound
 *     Message: user nope does not exist
 *     Details:
 *     1)	{
 *       	  "@type": "type.googleapis.com/google.rpc.ErrorInfo",
 *       	  ...
 *       	}
 */
function printedError(stderr: string): PrintedError {
  const code = /^ {2}Code: (\w+)$/m.exec(stderr)?.[1];
  const message = /^ {2}Message: (.*)$/m.exec(stderr)?.[1];
  if (!stderr.startsWith("ERROR:\n") || code === undefined || message === undefined) {
    throw new Error(`not a grpcurl error:\n${stderr}`);
  }
  const details: unknown[] = [];
  const at = stderr.indexOf("\n  Details:\n");
  if (at >= 0) {
    let current: string[] | undefined;
    const flush = () => current && details.push(JSON.parse(current.join("\n")));
    for (const line of stderr.slice(at + "\n  Details:\n".length).split("\n")) {
      const first = /^ {2}\d+\)\t(.*)$/.exec(line);
      const more = /^ {4}\t(.*)$/.exec(line);
      if (first) {
        flush();
        current = [first[1] as string];
      } else if (more && current) {
        current.push(more[1] as string);
      } else {
        break;
      }
    }
    flush();
  }
  return { code, message, details };
}

/** Calls a method that must fail with `code`; checks grpcurl's exit code and returns the error. */
async function failure(
  t: ExecutionContext,
  method: string,
  body: object,
  code: CodeName,
  options?: CallOptions,
): Promise<PrintedError> {
  const result = await invoke(method, body, options);
  t.is(result.code, exitCodeFor(code), `${method}: exit code\n${result.stderr}`);
  t.is(result.stdout, "");
  const printed = printedError(result.stderr);
  t.is(printed.code, code, result.stderr);
  return printed;
}

const detail = (error: PrintedError, type: string) =>
  error.details.find((d) => d["@type"] === `type.googleapis.com/google.rpc.${type}`);

function assertErrorInfo(
  t: ExecutionContext,
  error: PrintedError,
  reason: string,
  domain: string,
  metadata?: Record<string, string>,
) {
  const info = detail(error, "ErrorInfo");
  t.truthy(info, `no ErrorInfo in ${JSON.stringify(error.details)}`);
  t.is(info?.reason, reason);
  t.is(info?.domain, domain);
  if (metadata) t.like(info?.metadata ?? {}, metadata);
  t.is(error.details.filter((d) => d["@type"].endsWith("google.rpc.ErrorInfo")).length, 1);
}

// Fixtures made through grpcurl itself, unique per test.

const unique = () => randomUUID().slice(0, 12);

async function newUser(t: ExecutionContext, options?: CallOptions) {
  const email = `grpcurl-${unique()}@example.com`;
  const { user } = await call(
    t,
    "shop.user.v1.UserService/CreateUser",
    { user: { email, display_name: "Grpcurl Tester" } },
    options,
  );
  t.is(user.email, email);
  return user as { userId: string; email: string; displayName: string; createTime: string };
}

async function newProduct(
  t: ExecutionContext,
  fields: { stock?: number; amountMinor?: string } = {},
  options?: CallOptions,
) {
  const { product } = await call(
    t,
    "shop.product.v1.ProductService/CreateProduct",
    {
      product: {
        name: `Mug ${unique()}`,
        description: "stoneware",
        price: { currency_code: "EUR", amount_minor: fields.amountMinor ?? "1250" },
        stock_quantity: fields.stock ?? 5,
      },
    },
    options,
  );
  return product as { productId: string; stockQuantity?: number; price: { amountMinor: string } };
}

async function stockOf(t: ExecutionContext, productId: string): Promise<number> {
  const { product } = await call(t, "shop.product.v1.ProductService/GetProduct", {
    product_id: productId,
  });
  return product.stockQuantity ?? 0; // proto3 JSON omits zero
}

async function newOrder(t: ExecutionContext, quantity = 2, stock = 5) {
  const [user, product] = await Promise.all([newUser(t), newProduct(t, { stock })]);
  const requestId = `req-${unique()}`;
  const { order } = await call(t, "shop.order.v1.OrderService/CreateOrder", {
    user_id: user.userId,
    lines: [{ product_id: product.productId, quantity }],
    request_id: requestId,
  });
  t.is(order.state, "ORDER_STATE_CONFIRMED");
  return { user, product, order, requestId };
}

// ---------------------------------------------------------------------------------------------
// list and describe

for (const kind of KINDS) {
  test(`list on the ${kind} port shows the shop services and ${HEALTH}`, async (t) => {
    const result = await grpcurl([address(kind), "list"]);
    t.is(result.code, 0, result.stderr);
    const listed = result.stdout.trim().split("\n");
    for (const name of [...KINDS.map((k) => CONTRACT[k].service), HEALTH]) {
      t.true(listed.includes(name), `${name} missing:\n${result.stdout}`);
    }

    const { service, rpcs } = CONTRACT[kind];
    const methods = await grpcurl([address(kind), "list", service]);
    t.is(methods.code, 0, methods.stderr);
    t.deepEqual(
      methods.stdout.trim().split("\n").sort(),
      Object.keys(rpcs)
        .map((rpc) => `${service}.${rpc}`)
        .sort(),
    );
  });

  test(`describe ${CONTRACT[kind].service} shows every rpc with its types`, async (t) => {
    const { service, rpcs } = CONTRACT[kind];
    const pkg = service.slice(0, service.lastIndexOf("."));
    const result = await grpcurl([address(kind), "describe", service]);
    t.is(result.code, 0, result.stderr);
    t.true(result.stdout.startsWith(`${service} is a service:\n`), result.stdout);
    const described = [
      ...result.stdout.matchAll(/^ {2}rpc (\w+) \( (.+?) \) returns \( (.+?) \);$/gm),
    ];
    t.deepEqual(described.map((m) => m[1]).sort(), Object.keys(rpcs).sort());
    for (const [, rpc, request, response] of described) {
      t.is(request, `.${pkg}.${rpc}Request`);
      t.is(response, `${rpc === "WatchOrder" ? "stream " : ""}.${pkg}.${rpc}Response`);
    }
    // Reflection serves the source comments too.
    t.regex(result.stdout, /^\/\/ .+\nservice \w+ \{$/m);
  });

  test(`describe each request message of ${CONTRACT[kind].service}`, async (t) => {
    const { service, rpcs } = CONTRACT[kind];
    const pkg = service.slice(0, service.lastIndexOf("."));
    for (const [rpc, fields] of Object.entries(rpcs)) {
      const type = `${pkg}.${rpc}Request`;
      const result = await grpcurl([address(kind), "describe", type]);
      t.is(result.code, 0, result.stderr);
      t.true(result.stdout.startsWith(`${type} is a message:\n`), result.stdout);
      t.regex(result.stdout, new RegExp(`^message ${rpc}Request \\{$`, "m"));
      const declared = [...result.stdout.matchAll(/^ {2}(?:repeated )?\S+ (\w+) = \d+;$/gm)].map(
        (m) => m[1],
      );
      t.deepEqual(declared.sort(), [...fields].sort(), result.stdout);
    }
  });
}

test("describe a message from an imported file (google.rpc.ErrorInfo) over reflection", async (t) => {
  const result = await grpcurl([address("user"), "describe", "google.rpc.ErrorInfo"]);
  t.is(result.code, 0, result.stderr);
  t.regex(result.stdout, /^message ErrorInfo \{$/m);
  t.regex(result.stdout, /string reason = 1;/);
});

// ---------------------------------------------------------------------------------------------
// UserService

test("CreateUser and GetUser", async (t) => {
  const user = await newUser(t);
  t.regex(user.userId, /^\S+$/);
  t.is(user.displayName, "Grpcurl Tester");
  const { user: got } = await call(t, "shop.user.v1.UserService/GetUser", {
    user_id: user.userId,
  });
  t.deepEqual(got, user);
  t.regex(got.createTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$/);
});

test("UpdateUser changes only the fields named in update_mask", async (t) => {
  const user = await newUser(t);
  const { user: updated } = await call(t, "shop.user.v1.UserService/UpdateUser", {
    user: { user_id: user.userId, display_name: "Renamed", email: `other-${unique()}@example.com` },
    update_mask: { paths: ["display_name"] },
  });
  t.is(updated.userId, user.userId);
  t.is(updated.displayName, "Renamed");
  t.is(updated.email, user.email, "email was not in the mask");
  t.true(Date.parse(updated.updateTime) >= Date.parse(user.createTime));
  const { user: got } = await call(t, "shop.user.v1.UserService/GetUser", {
    user_id: user.userId,
  });
  t.deepEqual(got, updated);
});

test("ListUsers pages with page_size and page_token", async (t) => {
  const mine = [await newUser(t), await newUser(t), await newUser(t)].map((u) => u.userId);
  const seen: string[] = [];
  let token = "";
  let pages = 0;
  do {
    const page = await call(t, "shop.user.v1.UserService/ListUsers", {
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

test("DeleteUser removes the user", async (t) => {
  const user = await newUser(t);
  t.deepEqual(await call(t, "shop.user.v1.UserService/DeleteUser", { user_id: user.userId }), {});
  const gone = await failure(
    t,
    "shop.user.v1.UserService/GetUser",
    { user_id: user.userId },
    "NotFound",
  );
  assertErrorInfo(t, gone, "USER_NOT_FOUND", "shop.user.v1");
  await failure(t, "shop.user.v1.UserService/DeleteUser", { user_id: user.userId }, "NotFound");
});

// ---------------------------------------------------------------------------------------------
// ProductService

test("CreateProduct and GetProduct keep int64 money exact (2^53 - 1)", async (t) => {
  const product = await newProduct(t, { stock: 7, amountMinor: "9007199254740991" });
  t.is(product.stockQuantity, 7);
  t.deepEqual(product.price, { currencyCode: "EUR", amountMinor: "9007199254740991" });
  const { product: got } = await call(t, "shop.product.v1.ProductService/GetProduct", {
    product_id: product.productId,
  });
  t.deepEqual(got, product);
});

test("UpdateProduct changes only the fields named in update_mask", async (t) => {
  const product = await newProduct(t, { stock: 5 });
  const { product: updated } = await call(t, "shop.product.v1.ProductService/UpdateProduct", {
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
  t.is(await stockOf(t, product.productId), 9);
});

test("ListProducts pages and filters with in_stock_only", async (t) => {
  const empty = await newProduct(t, { stock: 0 });
  const stocked = [await newProduct(t, { stock: 3 }), await newProduct(t, { stock: 4 })];
  const list = async (inStockOnly: boolean) => {
    const seen: { productId: string; stockQuantity?: number }[] = [];
    let token = "";
    let pages = 0;
    do {
      const page = await call(t, "shop.product.v1.ProductService/ListProducts", {
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

test("ReserveStock holds units and CommitReservation keeps them", async (t) => {
  const product = await newProduct(t, { stock: 5 });
  const reservationId = `res-${unique()}`;
  const body = {
    reservation_id: reservationId,
    lines: [{ product_id: product.productId, quantity: 2 }],
    ttl: "30s",
  };
  const before = Date.now();
  const { reservation } = await call(t, "shop.product.v1.ProductService/ReserveStock", body);
  t.is(reservation.reservationId, reservationId);
  t.is(reservation.state, "RESERVATION_STATE_HELD");
  t.deepEqual(reservation.lines, [
    { productId: product.productId, quantity: 2, unitPrice: product.price },
  ]);
  const ttl = Date.parse(reservation.expireTime) - Date.parse(reservation.createTime);
  t.is(ttl, 30_000);
  t.true(Date.parse(reservation.createTime) >= before - 1_000);
  t.is(await stockOf(t, product.productId), 3, "held units are taken");

  const again = await call(t, "shop.product.v1.ProductService/ReserveStock", body);
  t.deepEqual(again.reservation, reservation, "same id and lines: the same reservation");
  t.is(await stockOf(t, product.productId), 3);

  const { reservation: committed } = await call(
    t,
    "shop.product.v1.ProductService/CommitReservation",
    { reservation_id: reservationId },
  );
  t.is(committed.state, "RESERVATION_STATE_COMMITTED");
  t.is(await stockOf(t, product.productId), 3);
});

test("ReleaseReservation gives held units back", async (t) => {
  const product = await newProduct(t, { stock: 5 });
  const reservationId = `res-${unique()}`;
  await call(t, "shop.product.v1.ProductService/ReserveStock", {
    reservation_id: reservationId,
    lines: [{ product_id: product.productId, quantity: 4 }],
  });
  t.is(await stockOf(t, product.productId), 1);
  const { reservation } = await call(t, "shop.product.v1.ProductService/ReleaseReservation", {
    reservation_id: reservationId,
  });
  t.is(reservation.state, "RESERVATION_STATE_RELEASED");
  t.is(await stockOf(t, product.productId), 5);
  const again = await call(t, "shop.product.v1.ProductService/ReleaseReservation", {
    reservation_id: reservationId,
  });
  t.is(again.reservation.state, "RESERVATION_STATE_RELEASED", "releasing twice is a no-op");
  t.is(await stockOf(t, product.productId), 5);
});

// ---------------------------------------------------------------------------------------------
// OrderService

test("CreateOrder, GetOrder and ListOrders", async (t) => {
  const { user, product, order, requestId } = await newOrder(t, 2, 5);
  t.is(order.userId, user.userId);
  t.is(order.requestId, requestId);
  t.deepEqual(order.lines, [
    { productId: product.productId, quantity: 2, unitPrice: product.price },
  ]);
  t.deepEqual(order.total, { currencyCode: "EUR", amountMinor: "2500" });
  t.is(await stockOf(t, product.productId), 3);

  const { order: got } = await call(t, "shop.order.v1.OrderService/GetOrder", {
    order_id: order.orderId,
  });
  t.is(got.orderId, order.orderId);
  t.is(got.state, "ORDER_STATE_CONFIRMED");

  const second = await call(t, "shop.order.v1.OrderService/CreateOrder", {
    user_id: user.userId,
    lines: [{ product_id: product.productId, quantity: 1 }],
    request_id: `req-${unique()}`,
  });
  const first = await call(t, "shop.order.v1.OrderService/ListOrders", {
    user_id: user.userId,
    page_size: 1,
  });
  t.is(first.orders.length, 1);
  t.truthy(first.nextPageToken);
  const rest = await call(t, "shop.order.v1.OrderService/ListOrders", {
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
    const last = await call(t, "shop.order.v1.OrderService/ListOrders", {
      user_id: user.userId,
      page_size: 1,
      page_token: rest.nextPageToken,
    });
    t.deepEqual(last, {}, "no third order");
  }
});

test("CreateOrder with a used request_id returns the same order", async (t) => {
  const { user, product, order, requestId } = await newOrder(t, 1, 5);
  const { order: again } = await call(t, "shop.order.v1.OrderService/CreateOrder", {
    user_id: user.userId,
    lines: [{ product_id: product.productId, quantity: 1 }],
    request_id: requestId,
  });
  t.is(again.orderId, order.orderId);
  t.is(await stockOf(t, product.productId), 4, "stock taken once");
});

test("CancelOrder returns the stock and is idempotent", async (t) => {
  const { product, order } = await newOrder(t, 2, 5);
  t.is(await stockOf(t, product.productId), 3);
  const { order: cancelled } = await call(t, "shop.order.v1.OrderService/CancelOrder", {
    order_id: order.orderId,
  });
  t.is(cancelled.state, "ORDER_STATE_CANCELLED");
  t.is(await stockOf(t, product.productId), 5);
  const { order: again } = await call(t, "shop.order.v1.OrderService/CancelOrder", {
    order_id: order.orderId,
  });
  t.deepEqual(again, cancelled);
  t.is(await stockOf(t, product.productId), 5);
});

// -max-time 4 rather than 2: grpcurl first fetches the schema over reflection, which on a loaded
// two-core machine can eat most of a 2 s budget before the first message.
test("WatchOrder sends the order as it is, then waits (-max-time 4 ends it)", async (t) => {
  const { order } = await newOrder(t);
  const started = Date.now();
  const result = await invoke(
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

test("WatchOrder on a cancelled order sends it once and ends by itself", async (t) => {
  const { order } = await newOrder(t);
  await call(t, "shop.order.v1.OrderService/CancelOrder", { order_id: order.orderId });
  const result = await invoke(
    "shop.order.v1.OrderService/WatchOrder",
    { order_id: order.orderId },
    { flags: ["-max-time", "20"] },
  );
  t.is(result.code, 0, result.stderr);
  const sent = messages(result.stdout);
  t.is(sent.length, 1, result.stdout);
  t.is(sent[0].order.state, "ORDER_STATE_CANCELLED");
});

test("WatchOrder streams a cancellation to an open grpcurl, then the stream ends", async (t) => {
  const { order } = await newOrder(t);
  const watcher = spawn(
    tool("grpcurl"),
    [
      "-plaintext",
      "-max-time",
      "20",
      "-d",
      JSON.stringify({ order_id: order.orderId }),
      address("order"),
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
  await call(t, "shop.order.v1.OrderService/CancelOrder", { order_id: order.orderId });
  t.is(await exited, 0, stderr);
  const states = messages(stdout).map((m) => m.order.state);
  t.is(states[0], "ORDER_STATE_CONFIRMED");
  t.is(states.at(-1), "ORDER_STATE_CANCELLED", stdout);
});

// ---------------------------------------------------------------------------------------------
// Errors: codes, exit codes and the google.rpc.Status details grpcurl prints

test("GetUser of an unknown id: NotFound with ErrorInfo USER_NOT_FOUND", async (t) => {
  const error = await failure(
    t,
    "shop.user.v1.UserService/GetUser",
    { user_id: "usr_nope" },
    "NotFound",
  );
  t.is(exitCodeFor("NotFound"), 69);
  t.regex(error.message, /usr_nope/);
  assertErrorInfo(t, error, "USER_NOT_FOUND", "shop.user.v1", { user_id: "usr_nope" });
});

test("CreateUser without an email: InvalidArgument with BadRequest fieldViolations", async (t) => {
  const error = await failure(
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
});

test("CreateOrder beyond the stock: FailedPrecondition with PreconditionFailure, nothing held", async (t) => {
  const [user, product] = await Promise.all([newUser(t), newProduct(t, { stock: 3 })]);
  const error = await failure(
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
  t.is(await stockOf(t, product.productId), 3, "a failed order holds no stock");
});

const errorCase = test.macro({
  async exec(
    t,
    make: (t: ExecutionContext) => Promise<{ method: string; body: object }>,
    code: CodeName,
    reason: string,
    domain: string,
    field?: string,
  ) {
    const { method, body } = await make(t);
    const error = await failure(t, method, body, code);
    assertErrorInfo(t, error, reason, domain);
    if (field !== undefined) {
      const fields = detail(error, "BadRequest")?.fieldViolations?.map(
        (v: { field: string }) => v.field,
      );
      t.deepEqual(fields, [field]);
    }
  },
  title: (provided = "", _make, code: CodeName, reason: string) => `${provided}: ${code} ${reason}`,
});

const fixed = (method: string, body: object) => async () => ({ method, body });

test(
  "CreateUser with a taken email",
  errorCase,
  async (t: ExecutionContext) => {
    const user = await newUser(t);
    return {
      method: "shop.user.v1.UserService/CreateUser",
      body: { user: { email: user.email, display_name: "Twin" } },
    };
  },
  "AlreadyExists",
  "EMAIL_TAKEN",
  "shop.user.v1",
);
test(
  "ListUsers with a forged page_token",
  errorCase,
  fixed("shop.user.v1.UserService/ListUsers", { page_token: "forged" }),
  "InvalidArgument",
  "INVALID_PAGE_TOKEN",
  "shop.user.v1",
  "page_token",
);
test(
  "UpdateUser with user_id in the mask",
  errorCase,
  async (t: ExecutionContext) => {
    const user = await newUser(t);
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
test(
  "GetProduct of an unknown id",
  errorCase,
  fixed("shop.product.v1.ProductService/GetProduct", { product_id: "prd_nope" }),
  "NotFound",
  "PRODUCT_NOT_FOUND",
  "shop.product.v1",
);
test(
  "ReserveStock beyond the stock",
  errorCase,
  async (t: ExecutionContext) => {
    const product = await newProduct(t, { stock: 1 });
    return {
      method: "shop.product.v1.ProductService/ReserveStock",
      body: {
        reservation_id: `res-${unique()}`,
        lines: [{ product_id: product.productId, quantity: 2 }],
      },
    };
  },
  "FailedPrecondition",
  "INSUFFICIENT_STOCK",
  "shop.product.v1",
);
test(
  "GetOrder of an unknown id",
  errorCase,
  fixed("shop.order.v1.OrderService/GetOrder", { order_id: "ord_nope" }),
  "NotFound",
  "ORDER_NOT_FOUND",
  "shop.order.v1",
);
test(
  "CreateOrder for an unknown user",
  errorCase,
  async (t: ExecutionContext) => {
    const product = await newProduct(t);
    return {
      method: "shop.order.v1.OrderService/CreateOrder",
      body: { user_id: "usr_nope", lines: [{ product_id: product.productId, quantity: 1 }] },
    };
  },
  "NotFound",
  "USER_NOT_FOUND",
  "shop.order.v1",
);
test(
  "CreateOrder reusing a request_id for a different order",
  errorCase,
  async (t: ExecutionContext) => {
    const { user, product, requestId } = await newOrder(t, 1, 5);
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
test(
  "WatchOrder without an order_id",
  errorCase,
  fixed("shop.order.v1.OrderService/WatchOrder", {}),
  "InvalidArgument",
  "INVALID_ARGUMENT",
  "shop.order.v1",
  "order_id",
);

test("-format-error prints the google.rpc.Status as JSON", async (t) => {
  const result = await invoke(
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

for (const kind of KINDS) {
  test(`Health/Check on the ${kind} port: "" and ${CONTRACT[kind].service} are SERVING`, async (t) => {
    for (const service of ["", CONTRACT[kind].service]) {
      const response = await call(t, `${HEALTH}/Check`, { service }, { to: address(kind) });
      t.deepEqual(response, { status: "SERVING" }, `service "${service}"`);
    }
  });
}

test("Health/Check of an unknown service: NotFound", async (t) => {
  for (const kind of KINDS) {
    const error = await failure(
      t,
      `${HEALTH}/Check`,
      { service: "shop.nope.v1.NopeService" },
      "NotFound",
      {
        to: address(kind),
      },
    );
    t.regex(error.message, /shop\.nope\.v1\.NopeService/);
  }
});

// ---------------------------------------------------------------------------------------------
// The same with local protos instead of reflection

test("local protos (-proto, -import-path): list shows exactly the files' services", async (t) => {
  const result = await grpcurl([...LOCAL_PROTOS, "list"]);
  t.is(result.code, 0, result.stderr);
  t.deepEqual(result.stdout.trim().split("\n"), KINDS.map((k) => CONTRACT[k].service).sort());
});

test("local protos: a call to each service", async (t) => {
  const local = { flags: LOCAL_PROTOS };
  const user = await newUser(t, local);
  const { user: got } = await call(
    t,
    "shop.user.v1.UserService/GetUser",
    { user_id: user.userId },
    local,
  );
  t.deepEqual(got, user);
  const product = await newProduct(t, { stock: 4, amountMinor: "300" }, local);
  t.is(product.stockQuantity, 4);
  const { order } = await call(
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

test("local protos: error details decode with google/rpc/error_details.proto", async (t) => {
  const [user, product] = await Promise.all([newUser(t), newProduct(t, { stock: 1 })]);
  const body = {
    user_id: user.userId,
    lines: [{ product_id: product.productId, quantity: 2 }],
    request_id: `req-${unique()}`,
  };
  const error = await failure(
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
  const raw = await failure(
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

const buf = path.join(repoRoot, "node_modules/.bin/buf");
const bufCurl = (method: string, body: object, flags: readonly string[] = []) =>
  limited(() =>
    exec(buf, [
      "curl",
      "--protocol",
      "grpc",
      "--http2-prior-knowledge",
      ...flags,
      "-d",
      JSON.stringify(body),
      `http://${address(kindOf(method))}/${method}`,
    ]),
  );

for (const [name, flags] of [
  ["server reflection", []],
  ["--schema proto", ["--schema", "proto"]],
] as const) {
  test(`buf curl GetUser with ${name}`, async (t) => {
    const user = await newUser(t);
    const ok = await bufCurl("shop.user.v1.UserService/GetUser", { user_id: user.userId }, flags);
    t.is(ok.code, 0, ok.stderr);
    t.deepEqual(JSON.parse(ok.stdout).user, user);

    // buf curl exits with the gRPC code shifted left by three bits.
    const missing = await bufCurl(
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
