// The grpcurl conformance suite's machinery: the real grpcurl (.tools/bin) and buf curl, bounded to
// a few processes at once, their output parsed, and the two targets every case runs against:
//
//   direct: the `npm start` launcher (the development profile: plaintext on loopback), each call
//           to its own service's port;
//   envoy:  the `npm run mesh` launcher (Envoy in front of two replicas of each service), every
//           call to Envoy's TLS listener (-cacert). Envoy routes reflection and health to the
//           user cluster.
//
// Every call signs in with a token: the admin's, or for CreateOrder the user's it names.
//
// A test file calls launchTargets() once, then declares its cases with each() and eachFront().
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import path from "node:path";
import { type ChannelCredentials, credentials } from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { repoRoot, tool } from "../../scripts/lib/launcher.js";
import { ADMIN_TOKEN, authHeader, CERTS, tokenFor } from "./credentials.js";
import { type ExecResult, exec } from "./exec.js";
import { type Launch, startLaunch } from "./launch.js";

let shop: Launch | undefined;
let mesh: Launch | undefined;

/**
 * Starts `npm start` and `npm run mesh` (both without demo data) before the test file's first
 * test, and stops them after its last, failing unless both exit 0 on Ctrl-C.
 */
export function launchTargets(): void {
  test.before(async () => {
    const [direct, meshed] = await Promise.allSettled([
      startLaunch("start", { args: ["--no-seed"] }),
      startLaunch("mesh", { args: ["--no-seed"] }),
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
}

/** grpcurl's JSON output; tests check it field by field. */
// biome-ignore lint/suspicious/noExplicitAny: parsed JSON of many message types.
export type Json = any;

export type Kind = "user" | "product" | "order";

/** The contract: each service's rpcs and the fields of each request message. */
export const CONTRACT: Record<Kind, { service: string; rpcs: Record<string, string[]> }> = {
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
export const KINDS = Object.keys(CONTRACT) as Kind[];
/** The internal API: the product process serves it, reflection lists it to mesh identities only. */
export const INVENTORY = "shop.product.v1.InventoryService";
export const SHOP_SERVICES = KINDS.map((kind) => CONTRACT[kind].service);
export const HEALTH = "grpc.health.v1.Health";
/** What every server and Envoy serve beside the shop's services. */
export const INFRA_SERVICES = [
  HEALTH,
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];

/** gRPC status code numbers by the names grpcurl prints. */
export const CODES = {
  InvalidArgument: 3,
  DeadlineExceeded: 4,
  NotFound: 5,
  AlreadyExists: 6,
  FailedPrecondition: 9,
} as const;
export type CodeName = keyof typeof CODES;

/** grpcurl exits with 64 + the gRPC status code when the RPC fails. */
export const exitCodeFor = (code: CodeName) => 64 + CODES[code];

export const kindOf = (method: string): Kind => {
  const kind = KINDS.find((k) => method.startsWith(`${CONTRACT[k].service}/`));
  if (!kind) throw new Error(`no service for ${method}`);
  return kind;
};

/** Local protos instead of reflection (error_details.proto so that details can be decoded). */
export const LOCAL_PROTOS = [
  "-import-path",
  "proto",
  "-import-path",
  "node_modules/google-proto-files",
  "-proto",
  "shop/user/v1/user.proto",
  "-proto",
  "shop/product/v1/product.proto",
  "-proto",
  "shop/product/v1/inventory.proto",
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
export const MAX_CLIENTS = 4;
let running = 0;
export const waiting: (() => void)[] = [];

export async function limited<T>(work: () => Promise<T>): Promise<T> {
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

/** grpcurl's flags for a plaintext server (the development profile). */
export const PLAINTEXT = ["-plaintext"] as const;
/** grpcurl's flags for Envoy's TLS listener: trust the development CA. */
export const EDGE_TLS = ["-cacert", path.join(CERTS, "ca.crt")] as const;

/** grpcurl with `transport` flags (plaintext by default) and `args`. */
export function grpcurl(
  args: readonly string[],
  timeoutMs = 30_000,
  transport: readonly string[] = PLAINTEXT,
): Promise<ExecResult> {
  return limited(() =>
    exec(tool("grpcurl"), [...transport, ...args], { cwd: repoRoot, timeoutMs }),
  );
}

/** The token a call signs in with: the user's for a CreateOrder naming one, else the admin's. */
export async function tokenOf(method: string, body: object): Promise<string> {
  const userId = (body as { user_id?: unknown }).user_id;
  return method.endsWith("/CreateOrder") && typeof userId === "string" && userId !== ""
    ? tokenFor(userId)
    : ADMIN_TOKEN;
}

export interface CallOptions {
  /** Flags before -d, e.g. LOCAL_PROTOS or ["-max-time", "2"]. */
  flags?: readonly string[];
  /** Send to this address instead of the target's address for the method's service. */
  to?: string;
  /** Sign in with this token instead of tokenOf's; "" for none. */
  token?: string;
}

/** The JSON messages of a server stream, as grpcurl prints them one after another. */
export function messages(stdout: string): Json[] {
  return stdout
    .trim()
    .split(/\n(?=\{)/)
    .filter(Boolean)
    .map((text) => JSON.parse(text));
}

export interface PrintedError {
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
export function printedError(stderr: string): PrintedError {
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

export const detail = (error: PrintedError, type: string) =>
  error.details.find((d) => d["@type"] === `type.googleapis.com/google.rpc.${type}`);

export function assertErrorInfo(
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

export const unique = () => randomUUID().slice(0, 12);

// ---------------------------------------------------------------------------------------------
// The two targets

/** An address that serves reflection and health, and the health service names it reports on. */
export interface Front {
  /** For test titles, e.g. "the user port". */
  label: string;
  address(): string;
  /** Service names whose Health/Check answers SERVING there ("" is the server as a whole). */
  serving: readonly string[];
  /** grpcurl's transport flags for it. */
  transport: readonly string[];
}

/** Where the calls go, with grpcurl and buf curl bound to it and fixtures made through it. */
export class Target {
  constructor(
    /** The prefix of every test title: "direct" or "envoy". */
    readonly name: string,
    /** The address a call to the kind's service goes to. */
    readonly address: (kind: Kind) => string,
    readonly fronts: readonly Front[],
    /** grpcurl's transport flags: PLAINTEXT or EDGE_TLS. */
    readonly transport: readonly string[],
    /** The URL scheme and buf curl flags for the same transport. */
    readonly buf: { scheme: "http" | "https"; flags: readonly string[] },
  ) {}

  /** grpc-js channel credentials for the same transport. */
  channel(): ChannelCredentials {
    return this.transport === EDGE_TLS
      ? credentials.createSsl(readFileSync(path.join(CERTS, "ca.crt")))
      : credentials.createInsecure();
  }

  /** grpcurl with this target's transport, e.g. `on.grpcurl([on.address("user"), "list"])`. */
  grpcurl(args: readonly string[], timeoutMs?: number): Promise<ExecResult> {
    return grpcurl(args, timeoutMs, this.transport);
  }

  async invoke(method: string, body: object, options: CallOptions = {}): Promise<ExecResult> {
    const token = options.token ?? (await tokenOf(method, body));
    return this.grpcurl([
      ...(token ? ["-H", authHeader(token)] : []),
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

  /** buf curl over gRPC (h2c, or TLS to Envoy) to the method's address, signed in as tokenOf. */
  async bufCurl(method: string, body: object, flags: readonly string[] = []): Promise<ExecResult> {
    const token = await tokenOf(method, body);
    return limited(() =>
      exec(path.join(repoRoot, "node_modules/.bin/buf"), [
        "curl",
        "--protocol",
        "grpc",
        ...this.buf.flags,
        ...["--header", authHeader(token)],
        ...flags,
        "-d",
        JSON.stringify(body),
        `${this.buf.scheme}://${this.address(kindOf(method))}/${method}`,
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

export const started = <T>(what: T | undefined, name: string): T => {
  if (what === undefined) throw new Error(`${name} is not running`);
  return what;
};
export const launcher = () => started(shop, "npm start");
export const envoyListener = () => started(mesh, "npm run mesh").envoy as string;

export const TARGETS = [
  new Target(
    "direct",
    (kind) => launcher().addresses[kind],
    KINDS.map((kind) => ({
      label: `the ${kind} port`,
      address: () => launcher().addresses[kind],
      serving: ["", CONTRACT[kind].service],
      transport: PLAINTEXT,
    })),
    PLAINTEXT,
    { scheme: "http", flags: ["--http2-prior-knowledge"] },
  ),
  // Envoy routes Health/Check by the service named in its body to the cluster that serves it.
  new Target(
    "envoy",
    envoyListener,
    [
      {
        label: "Envoy's listener",
        address: envoyListener,
        serving: ["", ...SHOP_SERVICES],
        transport: EDGE_TLS,
      },
    ],
    EDGE_TLS,
    { scheme: "https", flags: ["--cacert", path.join(CERTS, "ca.crt")] },
  ),
];

/** Declares one test per target, titled `<target>: <title>`. */
export function each(title: string, run: (t: ExecutionContext, on: Target) => Promise<void>): void {
  for (const on of TARGETS) test(`${on.name}: ${title}`, (t) => run(t, on));
}

/** Declares one test per front of each target, titled `<target>: <title> on <front>`. */
export function eachFront(
  title: string,
  run: (t: ExecutionContext, front: Front, on: Target) => Promise<void>,
): void {
  for (const on of TARGETS) {
    for (const front of on.fronts) {
      test(`${on.name}: ${title} on ${front.label}`, (t) => run(t, front, on));
    }
  }
}
