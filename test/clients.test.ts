// The example clients in clients/go, clients/python and clients/java, run against a live `npm run mesh` (Envoy in
// front of two replicas of each service) twice: directly, each service at one of its replicas over
// mutual TLS with the cli identity, and through Envoy's TLS listener with -target, where
// consecutive calls land on either replica. Each signs in as a customer an admin created, with a
// token for that customer, and as an admin to stock a product. Their claims are checked again from
// outside through grpcurl, the same way. Then the generated Go and Python code, built, vetted and
// imported.
import { readdirSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { repoRoot } from "../scripts/lib/launcher.js";
import { freePorts } from "../scripts/lib/ports.js";
import { ADMIN_TOKEN, CERTS, identity, tokenFor } from "./helpers/credentials.js";
import { type ExecResult, exec, grpcurl } from "./helpers/exec.js";
import { type Launch, startLaunch } from "./helpers/launch.js";

const python = path.join(repoRoot, ".tools/venv/bin/python");
const genPython = path.join(repoRoot, "gen/python");
const genGo = path.join(repoRoot, "gen/go");
const javaClient = path.join(repoRoot, "clients/java/target/shop-client.jar");

let mesh: Launch | undefined;
let buildDir: string | undefined;
let goClient: string;

/**
 * Builds clients/java/target/shop-client.jar: offline first (everything already in ~/.m2), online
 * when that fails (the first run downloads the plugins, protoc and grpc-java from Maven Central).
 */
async function buildJavaClient(): Promise<void> {
  const mvn = (offline: boolean) =>
    exec("mvn", ["-q", "-B", ...(offline ? ["-o"] : []), "-f", "clients/java/pom.xml", "package"], {
      timeoutMs: 300_000,
    }).catch((error: NodeJS.ErrnoException) => {
      if (error.code === "ENOENT")
        throw new Error(
          "mvn is not on PATH: install Maven 3.8+ and a JDK 17+ (e.g. apt-get install maven) to build clients/java",
        );
      throw error;
    });
  let result = await mvn(true);
  if (result.code !== 0) result = await mvn(false);
  if (result.code !== 0)
    throw new Error(`mvn package of clients/java failed:\n${result.stdout}${result.stderr}`);
}

test.before(async () => {
  buildDir = await mkdtemp(path.join(tmpdir(), "shopmesh-clients-"));
  goClient = path.join(buildDir, "shop-client");
  const [build, javaBuild, started] = await Promise.allSettled([
    exec("go", ["-C", "clients/go", "build", "-o", goClient, "."], { timeoutMs: 110_000 }),
    buildJavaClient(),
    startLaunch("mesh", { args: ["--no-seed"] }),
  ]);
  if (started.status === "fulfilled") mesh = started.value; // test.after.always stops it
  if (build.status === "rejected") throw build.reason;
  if (javaBuild.status === "rejected") throw javaBuild.reason;
  if (started.status === "rejected") throw started.reason;
  if (build.value.code !== 0)
    throw new Error(`go build of clients/go failed:\n${build.value.stderr}`);
});

test.after.always(async () => {
  const code = await mesh?.stop();
  if (buildDir) await rm(buildDir, { recursive: true, force: true });
  if (mesh && code !== 0) throw new Error(`npm run mesh exited ${code}:\n${mesh.output()}`);
});

/** The first capture of `pattern` in the client's output, failing the test when it is missing. */
function grab(t: ExecutionContext, stdout: string, pattern: RegExp): string {
  const match = pattern.exec(stdout);
  t.truthy(match, `no line matching ${pattern} in:\n${stdout}`);
  return match?.[1] ?? "";
}

type Kind = "user" | "product" | "order";

/** Where a client sends its calls: one address per service, or everything to one -target. */
type Endpoints = Record<Kind, string> | { target: string };

/** Who the client signs in as. */
interface SignIn {
  userId: string;
  token: string;
  adminToken: string;
}

const ca = path.join(CERTS, "ca.crt");

/**
 * The client's flags, with its flag prefix: the addresses (`-user …` or `-target …`), TLS (the
 * CA; the cli identity's certificate to reach a service's own port) and who it signs in as.
 */
function clientFlags(to: Endpoints, who: SignIn, dash: string): string[] {
  const tls =
    "target" in to
      ? [`${dash}ca`, ca]
      : [`${dash}ca`, ca, `${dash}cert`, identity("cli").cert, `${dash}key`, identity("cli").key];
  const addresses =
    "target" in to
      ? [`${dash}target`, to.target]
      : (["user", "product", "order"] as const).flatMap((kind) => [`${dash}${kind}`, to[kind]]);
  return [
    ...addresses,
    ...tls,
    ...[
      `${dash}user-id`,
      who.userId,
      `${dash}token`,
      who.token,
      `${dash}admin-token`,
      who.adminToken,
    ],
  ];
}

interface ClientRun {
  name: string;
  run(to: Endpoints, who: SignIn, timeout: string): Promise<ExecResult>;
  /** How the client spells FAILED_PRECONDITION. */
  failedPrecondition: string;
}

const CLIENTS: ClientRun[] = [
  {
    name: "Go",
    run: (to, who, timeout) =>
      exec(goClient, [...clientFlags(to, who, "-"), "-timeout", `${timeout}s`]),
    failedPrecondition: "FailedPrecondition",
  },
  {
    name: "Python",
    run: (to, who, timeout) =>
      exec(python, [
        "clients/python/shop_client.py",
        ...clientFlags(to, who, "--"),
        "--timeout",
        timeout,
      ]),
    failedPrecondition: "FAILED_PRECONDITION",
  },
  {
    name: "Java",
    run: (to, who, timeout) =>
      exec("java", ["-jar", javaClient, ...clientFlags(to, who, "-"), "-timeout", `${timeout}s`]),
    failedPrecondition: "FAILED_PRECONDITION",
  },
];

const live = () => {
  if (!mesh) throw new Error("npm run mesh is not running");
  return mesh;
};

/** The two ways into the mesh, and where grpcurl checks the client's story the same way. */
const ROUTES: {
  name: string;
  endpoints(): Endpoints;
  check(kind: Kind): string;
  tls: string[];
}[] = [
  {
    name: "directly over mutual TLS, each service at its first replica",
    endpoints: () => {
      const { user, product, order } = live().plan.addresses;
      return { user: user[0] as string, product: product[0] as string, order: order[0] as string };
    },
    check: (kind) => live().plan.addresses[kind][0] as string,
    tls: ["-cacert", ca, "-cert", identity("cli").cert, "-key", identity("cli").key],
  },
  {
    name: "through Envoy's TLS listener (-target)",
    endpoints: () => ({ target: live().envoy as string }),
    check: () => live().envoy as string,
    tls: ["-cacert", ca],
  },
];

/** A customer an admin created through Envoy, with a token of its own. */
async function newCustomer(): Promise<SignIn> {
  const { user } = await grpcurl(
    live().envoy as string,
    "shop.user.v1.UserService/CreateUser",
    {
      user: {
        email: `client-${Date.now()}-${Math.random().toString(36).slice(2)}@example.com`,
        display_name: "Demo Customer",
      },
    },
    [],
    ["-cacert", ca],
  );
  return { userId: user.userId, token: await tokenFor(user.userId), adminToken: ADMIN_TOKEN };
}

for (const client of CLIENTS) {
  for (const route of ROUTES) {
    // Serial: the flows run before, not among, the CPU-heavy import and go vet tests.
    test.serial(`the ${client.name} client walks the whole order flow ${route.name}`, async (t) => {
      const who = await newCustomer();
      const result = await client.run(route.endpoints(), who, "20"); // generous: CI machines can be loaded
      t.is(result.code, 0, `stdout:\n${result.stdout}\nstderr:\n${result.stderr}`);
      t.is(result.stderr, "");
      const out = result.stdout;

      const userId = grab(t, out, /^1 GetUser +user_id=(\S+) /m);
      t.is(userId, who.userId);
      const productId = grab(t, out, /^1 CreateProduct +product_id=(\S+) stock=5 price=1250 EUR/m);
      const first = grab(
        t,
        out,
        /^2 CreateOrder +order_id=(\S+) state=ORDER_STATE_CONFIRMED total=2500 EUR/m,
      );
      t.regex(out, /^2 CreateOrder +retry with the same request_id returned the same order$/m);
      const second = grab(
        t,
        out,
        /^2 CreateOrder +order_id=(\S+) state=ORDER_STATE_CONFIRMED \(a second/m,
      );
      const pages = Number(grab(t, out, /^3 ListOrders +page_size=1: (\d+) pages/m));
      t.true(pages >= 2, "two orders on pages of one");
      t.regex(out, /^4 WatchOrder +first message: state=ORDER_STATE_CONFIRMED$/m);
      t.regex(
        out,
        new RegExp(`^5 CancelOrder +order_id=${first} state=ORDER_STATE_CANCELLED$`, "m"),
      );
      t.regex(out, /^5 WatchOrder +stream showed state=ORDER_STATE_CANCELLED$/m);
      t.regex(out, /^5 WatchOrder +stream ended after the final state$/m);
      t.regex(
        out,
        new RegExp(`^6 CreateOrder +quantity=1000 -> ${client.failedPrecondition}: `, "m"),
      );
      t.regex(out, /^6 ErrorInfo +reason=INSUFFICIENT_STOCK domain=shop\.order\.v1 /m);
      t.regex(out, new RegExp(`^6 PreconditionFailure +type=STOCK subject=${productId} `, "m"));
      t.regex(out, /^6 GetProduct +stock=4$/m);
      t.true(out.endsWith("ok: every step matched the contract\n"), out);

      // The client's story, checked from outside with grpcurl.
      const { orders } = await grpcurl(
        route.check("order"),
        "shop.order.v1.OrderService/ListOrders",
        {
          user_id: userId,
        },
        [],
        route.tls,
      );
      t.deepEqual(
        Object.fromEntries(
          orders.map((o: { orderId: string; state: string }) => [o.orderId, o.state]),
        ),
        { [first]: "ORDER_STATE_CANCELLED", [second]: "ORDER_STATE_CONFIRMED" },
      );
      const { product } = await grpcurl(
        route.check("product"),
        "shop.product.v1.ProductService/GetProduct",
        {
          product_id: productId,
        },
        [],
        route.tls,
      );
      t.is(product.stockQuantity, 4);
    });
  }

  // The README runs a client twice with the same customer: the second run finds the first's orders.
  test.serial(
    `the ${client.name} client passes again for a customer with orders of an earlier run`,
    async (t) => {
      const who = await newCustomer();
      const to = { target: live().envoy as string };
      const earlier = await client.run(to, who, "20");
      t.is(earlier.code, 0, earlier.stdout + earlier.stderr);
      const again = await client.run(to, who, "20");
      t.is(again.code, 0, `stdout:\n${again.stdout}\nstderr:\n${again.stderr}`);
      const listed = grab(t, again.stdout, /^3 ListOrders +page_size=1: \d+ pages, orders (.+)$/m);
      t.is(listed.split(", ").length, 4, "two orders of each run");
      t.true(again.stdout.endsWith("ok: every step matched the contract\n"), again.stdout);
    },
  );

  for (const [how, flag] of [
    ["the services are", "-user, -product, -order"],
    ["the -target is", "-target"],
  ] as const) {
    test(`the ${client.name} client exits 1 with FAIL when ${how} unreachable (${flag})`, async (t) => {
      const [port] = await freePorts(1);
      const nowhere = `127.0.0.1:${port}`;
      const to: Endpoints =
        flag === "-target"
          ? { target: nowhere }
          : { user: nowhere, product: nowhere, order: nowhere };
      const result = await client.run(
        to,
        { userId: "usr_nobody", token: ADMIN_TOKEN, adminToken: ADMIN_TOKEN },
        // A refused connection fails at once; the deadline only has to outlast a loaded JVM's
        // first connection attempt, which took over a second on a busy CI machine.
        "10",
      );
      t.is(result.code, 1, result.stdout + result.stderr);
      t.regex(result.stderr, /^FAIL .*Unavailable|^FAIL .*UNAVAILABLE/m);
      t.false(result.stdout.includes("ok: every step"));
    });
  }
}

// ---------------------------------------------------------------------------------------------
// Generated code

const KINDS = ["user", "product", "order"] as const;

/** Every generated Python module under gen/python, as a dotted name (sync: tests are declared from it). */
function generatedPythonModules(): string[] {
  const entries = readdirSync(path.join(genPython, "shop"), {
    recursive: true,
    withFileTypes: true,
  });
  return entries
    .filter((e) => e.isFile() && /_pb2(_grpc)?\.py$/.test(e.name))
    .map((e) =>
      path
        .relative(genPython, path.join(e.parentPath, e.name))
        .replace(/\.py$/, "")
        .split(path.sep)
        .join("."),
    )
    .sort();
}

test("gen/python holds the _pb2 and _pb2_grpc modules of every proto", (t) => {
  const modules = generatedPythonModules();
  const files: [string, string][] = [
    ...KINDS.map((kind): [string, string] => [kind, kind]),
    ["product", "inventory"],
    ["type", "money"],
  ];
  const expected = files.flatMap(([pkg, file]) => [
    `shop.${pkg}.v1.${file}_pb2`,
    `shop.${pkg}.v1.${file}_pb2_grpc`,
  ]);
  t.deepEqual(modules, expected.sort());
});

for (const module of generatedPythonModules()) {
  test(`python -c 'import ${module}'`, async (t) => {
    // -W error: a protobuf or grpcio version warning at import time fails the test.
    const probe = module.endsWith("_grpc")
      ? "print(' '.join(sorted(n for n in dir(m) if n.endswith('Stub'))))"
      : "print(m.DESCRIPTOR.package)";
    const result = await exec(python, ["-W", "error", "-c", `import ${module} as m; ${probe}`], {
      cwd: genPython,
    });
    t.is(result.code, 0, result.stderr);
    t.is(result.stderr, "");
    const pkg = module.split(".").slice(0, 3).join(".");
    const file = (module.split(".")[3] as string).replace(/_pb2(_grpc)?$/, "");
    if (!module.endsWith("_grpc")) {
      t.is(result.stdout.trim(), pkg);
    } else if (file !== "money") {
      t.is(result.stdout.trim(), `${file[0]?.toUpperCase()}${file.slice(1)}ServiceStub`);
    } else {
      t.is(result.stdout.trim(), "", "money.proto has no services");
    }
  });
}

test("go build ./... && go vet ./... in gen/go", async (t) => {
  const build = await exec("go", ["build", "./..."], { cwd: genGo, timeoutMs: 110_000 });
  t.is(build.code, 0, build.stderr);
  const vet = await exec("go", ["vet", "./..."], { cwd: genGo, timeoutMs: 110_000 });
  t.is(vet.code, 0, vet.stderr);
  t.is(vet.stdout + vet.stderr, "");
});
