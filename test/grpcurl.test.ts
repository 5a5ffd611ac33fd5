// grpcurl conformance: the real grpcurl (.tools/bin) with the schema from server reflection only
// (plus one block with the local protos and one with buf curl): every RPC of every service, the
// error codes and google.rpc.Status details grpcurl prints, and health checks. Every case runs
// against two targets and is titled by it:
//
//   direct: the `npm start` launcher, each call to its own service's port;
//   envoy:  the `npm run mesh` launcher (Envoy in front of two replicas of each service), every
//           call to Envoy's listener. Envoy routes reflection and health to the user cluster.
//
// One launcher and one mesh serve the whole file. Tests run concurrently, so each makes its own
// data. The replicas of a service share one database, so what a call wrote is there for the next
// call whichever replica Envoy picks; only a watch is not told of a change made on another replica
// and sees it on its next poll of the database (SHOP_WATCH_POLL_MS, 1 s).
import { spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { type ExecResult, exec } from "./helpers/exec.js";
import { type Launcher, startLauncher } from "./helpers/launch.js";
import { type MeshLauncher, startMeshLauncher } from "./helpers/launch-mesh.js";
import { type ReflectionVersion, reflect } from "./helpers/reflection.js";

let shop: Launcher | undefined;
let mesh: MeshLauncher | undefined;

test.before(async () => {
  const [direct, meshed] = await Promise.allSettled([
    startLauncher({ args: ["--no-seed"] }),
    startMeshLauncher({ args: ["--no-seed"] }),
  ]);
  if (direct.status === "fulfilled") shop = direct.value;
  if (meshed.status === "fulfilled") mesh = meshed.value;
  // test.after.always stops whichever came up.
  if (direct.status === "rejected") throw direct.reason;
  if (meshed.status === "rejected") throw meshed.reason;
});

test.after.always(async () => {
  const [direct, meshed] = await Promise.all([shop?.stop(), mesh?.stop()]);
  const problems = [];
  if (shop && direct !== 0)
    problems.push(`npm start exited ${direct} on Ctrl-C:\n${shop.output()}`);
  if (mesh && meshed !== 0)
    problems.push(`npm run mesh exited ${meshed} on Ctrl-C:\n${mesh.output()}`);
  if (problems.length > 0) throw new Error(problems.join("\n"));
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
const SHOP_SERVICES = KINDS.map((kind) => CONTRACT[kind].service);
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
 * At most this many grpcurl / buf processes at once, over both targets. AVA starts all of this
 * file's tests together; unbounded, ~100 clients plus nine service processes and Envoy on two cores
 * push single RPCs past the order service's 5 s dependency deadline.
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
  /** Send to this address instead of the target's address for the method's service. */
  to?: string;
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

const unique = () => randomUUID().slice(0, 12);

// ---------------------------------------------------------------------------------------------
// The two targets

/** An address that serves reflection and health, and the health service names it reports on. */
interface Front {
  /** For test titles, e.g. "the user port". */
  label: string;
  address(): string;
  /** Service names whose Health/Check answers SERVING there ("" is the server as a whole). */
  serving: readonly string[];
}

/** Where the calls go, with grpcurl and buf curl bound to it and fixtures made through it. */
class Target {
  constructor(
    /** The prefix of every test title: "direct" or "envoy". */
    readonly name: string,
    /** The address a call to the kind's service goes to. */
    readonly address: (kind: Kind) => string,
    readonly fronts: readonly Front[],
  ) {}

  invoke(method: string, body: object, options: CallOptions = {}): Promise<ExecResult> {
    return grpcurl([
      ...(options.flags ?? []),
      "-d",
      JSON.stringify(body),
      options.to ?? this.address(kindOf(method)),
      method,
    ]);
  }

  /** Calls a unary method and returns its JSON response, failing the test unless grpcurl exits 0. */
  async call(
    t: ExecutionContext,
    method: string,
    body: object,
    options?: CallOptions,
  ): Promise<Json> {
    const result = await this.invoke(method, body, options);
    if (result.code !== 0) {
      t.fail(`${method} ${JSON.stringify(body)} exited ${result.code}:\n${result.stderr}`);
      throw new Error(`${method} failed`);
    }
    t.is(result.stderr, "", `${method} wrote to stderr`);
    return JSON.parse(result.stdout);
  }

  /** Calls a method that must fail with `code`; checks grpcurl's exit code and returns the error. */
  async failure(
    t: ExecutionContext,
    method: string,
    body: object,
    code: CodeName,
    options?: CallOptions,
  ): Promise<PrintedError> {
    const result = await this.invoke(method, body, options);
    t.is(result.code, exitCodeFor(code), `${method}: exit code\n${result.stderr}`);
    t.is(result.stdout, "");
    const printed = printedError(result.stderr);
    t.is(printed.code, code, result.stderr);
    return printed;
  }

  /** buf curl over gRPC (h2c) to the method's address. */
  bufCurl(method: string, body: object, flags: readonly string[] = []): Promise<ExecResult> {
    return limited(() =>
      exec(path.join(repoRoot, "node_modules/.bin/buf"), [
        "curl",
        "--protocol",
        "grpc",
        "--http2-prior-knowledge",
        ...flags,
        "-d",
        JSON.stringify(body),
        `http://${this.address(kindOf(method))}/${method}`,
      ]),
    );
  }

  // Fixtures made through grpcurl itself, unique per test.

  async newUser(t: ExecutionContext, options?: CallOptions) {
    const email = `grpcurl-${unique()}@example.com`;
    const { user } = await this.call(
      t,
      "shop.user.v1.UserService/CreateUser",
      { user: { email, display_name: "Grpcurl Tester" } },
      options,
    );
    t.is(user.email, email);
    return user as { userId: string; email: string; displayName: string; createTime: string };
  }

  async newProduct(
    t: ExecutionContext,
    fields: { stock?: number; amountMinor?: string } = {},
    options?: CallOptions,
  ) {
    const { product } = await this.call(
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
    return product as {
      productId: string;
      stockQuantity?: number;
      price: { amountMinor: string };
    };
  }

  async stockOf(t: ExecutionContext, productId: string): Promise<number> {
    const { product } = await this.call(t, "shop.product.v1.ProductService/GetProduct", {
      product_id: productId,
    });
    return product.stockQuantity ?? 0; // proto3 JSON omits zero
  }

  async newOrder(t: ExecutionContext, quantity = 2, stock = 5) {
    const [user, product] = await Promise.all([this.newUser(t), this.newProduct(t, { stock })]);
    const requestId = `req-${unique()}`;
    const { order } = await this.call(t, "shop.order.v1.OrderService/CreateOrder", {
      user_id: user.userId,
      lines: [{ product_id: product.productId, quantity }],
      request_id: requestId,
    });
    t.is(order.state, "ORDER_STATE_CONFIRMED");
    return { user, product, order, requestId };
  }
}

const started = <T>(what: T | undefined, name: string): T => {
  if (what === undefined) throw new Error(`${name} is not running`);
  return what;
};
const launcher = () => started(shop, "npm start");
const envoyListener = () => started(mesh, "npm run mesh").envoy;

const TARGETS = [
  new Target(
    "direct",
    (kind) => launcher().addresses[kind],
    KINDS.map((kind) => ({
      label: `the ${kind} port`,
      address: () => launcher().addresses[kind],
      serving: ["", CONTRACT[kind].service],
    })),
  ),
  // Envoy cannot route Health/Check by the service named in its body: the user cluster answers,
  // and knows only its own service's health.
  new Target("envoy", envoyListener, [
    { label: "Envoy's listener", address: envoyListener, serving: ["", CONTRACT.user.service] },
  ]),
];

/** Declares one test per target, titled `<target>: <title>`. */
function each(title: string, run: (t: ExecutionContext, on: Target) => Promise<void>): void {
  for (const on of TARGETS) test(`${on.name}: ${title}`, (t) => run(t, on));
}

/** Declares one test per front of each target, titled `<target>: <title> on <front>`. */
function eachFront(
  title: string,
  run: (t: ExecutionContext, front: Front, on: Target) => Promise<void>,
): void {
  for (const on of TARGETS) {
    for (const front of on.fronts) {
      test(`${on.name}: ${title} on ${front.label}`, (t) => run(t, front, on));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// list and describe

eachFront(`list shows the three shop services and ${HEALTH}`, async (t, front) => {
  const result = await grpcurl([front.address(), "list"]);
  t.is(result.code, 0, result.stderr);
  const listed = result.stdout.trim().split("\n");
  for (const name of [...SHOP_SERVICES, HEALTH]) {
    t.true(listed.includes(name), `${name} missing:\n${result.stdout}`);
  }
});

for (const kind of KINDS) {
  const { service, rpcs } = CONTRACT[kind];
  const pkg = service.slice(0, service.lastIndexOf("."));

  each(`list and describe ${service} show every rpc with its types`, async (t, on) => {
    const methods = await grpcurl([on.address(kind), "list", service]);
    t.is(methods.code, 0, methods.stderr);
    t.deepEqual(
      methods.stdout.trim().split("\n").sort(),
      Object.keys(rpcs)
        .map((rpc) => `${service}.${rpc}`)
        .sort(),
    );

    const result = await grpcurl([on.address(kind), "describe", service]);
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

  each(`describe each request message of ${service}`, async (t, on) => {
    for (const [rpc, fields] of Object.entries(rpcs)) {
      const type = `${pkg}.${rpc}Request`;
      const result = await grpcurl([on.address(kind), "describe", type]);
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

each(
  "describe a message from an imported file (google.rpc.ErrorInfo) over reflection",
  async (t, on) => {
    const result = await grpcurl([on.address("user"), "describe", "google.rpc.ErrorInfo"]);
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
      const answers = await reflect(on.address("order"), version, [
        { list_services: "" },
        { file_containing_symbol: "shop.order.v1.OrderService" },
        { file_containing_symbol: "shop.nope.v1.Nope" },
      ]);
      t.deepEqual(
        answers.map((a) => a.kind),
        ["list_services_response", "file_descriptor_response", "error_response"],
      );
      const [listed, found, missing] = answers;
      for (const name of SHOP_SERVICES) t.true(listed?.services?.includes(name), `${name} missing`);
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

      // Every import, transitively, is served too: those left out of the answer (@grpc/reflection
      // sends only the files that define types the answer uses, not option-only imports such as
      // google/api/annotations.proto) by file_by_filename, as grpcurl asks for them.
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

each("ReserveStock holds units and CommitReservation keeps them", async (t, on) => {
  const product = await on.newProduct(t, { stock: 5 });
  const reservationId = `res-${unique()}`;
  const body = {
    reservation_id: reservationId,
    lines: [{ product_id: product.productId, quantity: 2 }],
    ttl: "30s",
  };
  const before = Date.now();
  const { reservation } = await on.call(t, "shop.product.v1.ProductService/ReserveStock", body);
  t.is(reservation.reservationId, reservationId);
  t.is(reservation.state, "RESERVATION_STATE_HELD");
  t.deepEqual(reservation.lines, [
    { productId: product.productId, quantity: 2, unitPrice: product.price },
  ]);
  const ttl = Date.parse(reservation.expireTime) - Date.parse(reservation.createTime);
  t.is(ttl, 30_000);
  t.true(Date.parse(reservation.createTime) >= before - 1_000);
  t.is(await on.stockOf(t, product.productId), 3, "held units are taken");

  const again = await on.call(t, "shop.product.v1.ProductService/ReserveStock", body);
  t.deepEqual(again.reservation, reservation, "same id and lines: the same reservation");
  t.is(await on.stockOf(t, product.productId), 3);

  const { reservation: committed } = await on.call(
    t,
    "shop.product.v1.ProductService/CommitReservation",
    { reservation_id: reservationId },
  );
  t.is(committed.state, "RESERVATION_STATE_COMMITTED");
  t.is(await on.stockOf(t, product.productId), 3);
});

each("ReleaseReservation gives held units back", async (t, on) => {
  const product = await on.newProduct(t, { stock: 5 });
  const reservationId = `res-${unique()}`;
  await on.call(t, "shop.product.v1.ProductService/ReserveStock", {
    reservation_id: reservationId,
    lines: [{ product_id: product.productId, quantity: 4 }],
  });
  t.is(await on.stockOf(t, product.productId), 1);
  const { reservation } = await on.call(t, "shop.product.v1.ProductService/ReleaseReservation", {
    reservation_id: reservationId,
  });
  t.is(reservation.state, "RESERVATION_STATE_RELEASED");
  t.is(await on.stockOf(t, product.productId), 5);
  const again = await on.call(t, "shop.product.v1.ProductService/ReleaseReservation", {
    reservation_id: reservationId,
  });
  t.is(again.reservation.state, "RESERVATION_STATE_RELEASED", "releasing twice is a no-op");
  t.is(await on.stockOf(t, product.productId), 5);
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
        "-plaintext",
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
  "ReserveStock beyond the stock",
  async (t: ExecutionContext, on: Target) => {
    const product = await on.newProduct(t, { stock: 1 });
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
  t.deepEqual(result.stdout.trim().split("\n"), [...SHOP_SERVICES].sort());
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
