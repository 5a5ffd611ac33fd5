// End to end: `npm start`'s launcher (scripts/start.ts) as a real process on free ports, driven
// with the real grpcurl over server reflection, exactly as its ready banner tells a user to.
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { DEMO_EMAIL } from "../scripts/lib/seed.js";
import { registry } from "../services/registry.js";
import { exec, grpcurl } from "./helpers/exec.js";
import { alive, childPids, HOST, isListening, launch, spawnLaunch } from "./helpers/launch.js";
import { shellSplit } from "./helpers/shell.js";

const SERVICES = {
  user: "shop.user.v1.UserService",
  product: "shop.product.v1.ProductService",
  order: "shop.order.v1.OrderService",
} as const;

test("shellSplit handles the quoting the banner uses", (t) => {
  t.deepEqual(shellSplit(`  a -d '{"x": "y z"}' b\\ c "d\\"e"  `), [
    "a",
    "-d",
    '{"x": "y z"}',
    "b c",
    'd"e',
  ]);
  t.throws(() => shellSplit("a | b"));
  t.throws(() => shellSplit("a 'b"));
});

interface BannerCommand {
  line: string;
  argv: string[];
  /** "list", "describe <symbol>" or the full method name. */
  action: string;
  address: string;
  body?: Record<string, unknown>;
}

/** The variables the banner's `export NAME=value` lines set. */
function bannerExports(banner: string): Record<string, string> {
  return Object.fromEntries(
    [...banner.matchAll(/^\s+export (\w+)=(\S+)$/gm)].map(([, name, value]) => [name, value]),
  );
}

/**
 * Every grpcurl command line of the banner, parsed as a shell would after the banner's export
 * lines: "$TOKEN" and "$ADMIN_TOKEN" expand to what they set.
 */
function bannerCommands(banner: string): BannerCommand[] {
  const vars = bannerExports(banner);
  return banner
    .split("\n")
    .filter((line) => /^\s+\S*grpcurl\s/.test(line))
    .map((line) => {
      const argv = shellSplit(
        line.replace(/\$(TOKEN|ADMIN_TOKEN)\b/g, (_, name: string) => {
          if (!vars[name]) throw new Error(`the banner uses $${name} but does not export it`);
          return vars[name];
        }),
      );
      const d = argv.indexOf("-d");
      const address = argv.find((arg) => /^[\w.-]+:\d+$/.test(arg)) ?? "";
      const rest = argv.slice(argv.indexOf(address) + 1);
      return {
        line: line.trim(),
        argv,
        action: rest.join(" "),
        address,
        ...(d >= 0 && { body: JSON.parse(argv[d + 1] as string) }),
      };
    });
}

/** Runs a banner command exactly as printed: no shell, from the repo root. */
async function runAsPrinted(t: ExecutionContext, command: BannerCommand) {
  const [program, ...args] = command.argv;
  t.is(
    path.resolve(repoRoot, program as string),
    tool("grpcurl"),
    `the banner should name the project's grpcurl: ${command.line}`,
  );
  const result = await exec(program as string, args, { cwd: repoRoot, timeoutMs: 30_000 });
  t.is(result.code, 0, `${command.line}\n${result.stderr}`);
  return result;
}

const userIdIn = (banner: string) => {
  const getUser = bannerCommands(banner).find((c) => c.action.endsWith("/GetUser"));
  return getUser?.body?.user_id as string | undefined;
};

/** The banner lists the user port: what it serves, with health and reflection. */
function assertServicesListed(t: ExecutionContext, stdout: string) {
  t.deepEqual(
    stdout.trim().split("\n").sort(),
    [
      SERVICES.user,
      "grpc.health.v1.Health",
      "grpc.reflection.v1.ServerReflection",
      "grpc.reflection.v1alpha.ServerReflection",
    ].sort(),
  );
}

test.serial("every grpcurl command in the banner works exactly as printed", async (t) => {
  // The services' TypeScript through tsx, as `npm start` runs them on a fresh clone.
  const shop = await launch(t, "start", { runtime: "tsx" });
  const commands = bannerCommands(shop.banner);
  t.deepEqual(
    commands.map((c) => c.action),
    [
      "list",
      `describe ${SERVICES.order}`,
      `${SERVICES.user}/GetUser`,
      `${SERVICES.product}/ListProducts`,
      `${SERVICES.order}/CreateOrder`,
      `${SERVICES.order}/ListOrders`,
      "grpc.health.v1.Health/Check",
    ],
    shop.banner,
  );
  const ports = Object.values(shop.addresses);
  for (const command of commands) t.true(ports.includes(command.address), command.line);
  t.deepEqual(Object.keys(bannerExports(shop.banner)), ["TOKEN", "ADMIN_TOKEN"]);
  // The rpcs that need a token carry the demo user's; list, describe and health need none.
  for (const command of commands) {
    const signedIn = /\/(GetUser|CreateOrder|ListOrders)$/.test(command.action);
    t.is(command.line.includes('-H "authorization: Bearer $TOKEN"'), signedIn, command.line);
  }

  let stockBefore: number | undefined;
  let orderId: string | undefined;
  for (const command of commands) {
    const { stdout } = await runAsPrinted(t, command);
    switch (command.action) {
      case "list":
        assertServicesListed(t, stdout);
        break;
      case `describe ${SERVICES.order}`:
        t.true(stdout.startsWith(`${SERVICES.order} is a service:`), stdout);
        t.true(
          stdout.includes(
            "rpc WatchOrder ( .shop.order.v1.WatchOrderRequest ) returns ( stream .shop.order.v1.WatchOrderResponse )",
          ),
          stdout,
        );
        break;
      case `${SERVICES.user}/GetUser`: {
        const { user } = JSON.parse(stdout);
        t.is(user.userId, command.body?.user_id);
        t.is(user.email, DEMO_EMAIL);
        t.is(user.displayName, "Demo Shopper");
        break;
      }
      case `${SERVICES.product}/ListProducts`: {
        const { products } = JSON.parse(stdout);
        t.is(products.length, 3, stdout);
        const ordered = commands.find((c) => c.action.endsWith("/CreateOrder"));
        const lines = ordered?.body?.lines as { product_id: string }[];
        const product = products.find(
          (p: { productId: string }) => p.productId === lines[0]?.product_id,
        );
        t.truthy(product, "CreateOrder's product is in the catalogue");
        stockBefore = product.stockQuantity;
        break;
      }
      case `${SERVICES.order}/CreateOrder`: {
        const { order } = JSON.parse(stdout);
        t.is(order.state, "ORDER_STATE_CONFIRMED");
        t.is(order.requestId, command.body?.request_id);
        t.is(order.userId, command.body?.user_id);
        orderId = order.orderId;
        t.regex(order.orderId, /^\S+$/);
        // The same command again: request_id makes it return the same order, not a second one.
        const again = JSON.parse((await runAsPrinted(t, command)).stdout);
        t.is(again.order.orderId, order.orderId);
        t.is(again.order.state, "ORDER_STATE_CONFIRMED");
        const lines = command.body?.lines as { product_id: string; quantity: number }[];
        const { product } = await grpcurl(
          shop.addresses.product,
          `${SERVICES.product}/GetProduct`,
          {
            product_id: lines[0]?.product_id,
          },
        );
        t.is(product.stockQuantity, (stockBefore as number) - (lines[0]?.quantity as number));
        break;
      }
      case `${SERVICES.order}/ListOrders`: {
        const { orders } = JSON.parse(stdout);
        t.deepEqual(
          orders.map((o: { orderId: string }) => o.orderId),
          [orderId],
          "one order, however often CreateOrder ran",
        );
        break;
      }
      case "grpc.health.v1.Health/Check":
        t.deepEqual(JSON.parse(stdout), { status: "SERVING" });
        break;
      default:
        t.fail(`unexpected command ${command.line}`);
    }
  }
});

test.serial("SIGINT stops every service and the launcher exits 0", async (t) => {
  const shop = await launch(t, "start");
  const services = childPids(shop.child.pid as number);
  t.is(services.length, 3, `launcher children: ${services.join(" ")}`);
  for (const port of Object.values(shop.ports)) t.true(await isListening(port));

  t.is(await shop.stop(), 0, shop.output());
  t.regex(shop.output(), /stopping/);
  for (const [name, port] of Object.entries(shop.ports)) {
    t.false(await isListening(port), `${name} still listening on ${port}`);
  }
  for (const pid of services) t.false(alive(pid), `service process ${pid} outlived the launcher`);
});

test.serial("a second launch on the same data dir does not seed again", async (t) => {
  const dataDir = await mkdtemp(path.join(tmpdir(), "shopmesh-reuse-"));
  t.teardown(() => rm(dataDir, { recursive: true, force: true }));

  const first = await launch(t, "start", { dataDir });
  const firstUser = userIdIn(first.banner);
  t.truthy(firstUser, first.banner);
  t.is(await first.stop(), 0);

  const second = await launch(t, "start", { dataDir });
  t.is(userIdIn(second.banner), firstUser, "the same demo user, read back from disk");
  const { users } = await grpcurl(second.addresses.user, `${SERVICES.user}/ListUsers`, {
    page_size: 50,
  });
  t.deepEqual(
    users.map((u: { userId: string }) => u.userId),
    [firstUser],
  );
  const { products } = await grpcurl(second.addresses.product, `${SERVICES.product}/ListProducts`, {
    page_size: 50,
  });
  t.is(products.length, 3, "the demo catalogue once, not twice");
});

const unseeded = test.macro({
  async exec(t, options: { args?: string[]; env?: Record<string, string> }) {
    const shop = await launch(t, "start", options);
    const users = await grpcurl(shop.addresses.user, `${SERVICES.user}/ListUsers`, {});
    const products = await grpcurl(shop.addresses.product, `${SERVICES.product}/ListProducts`, {});
    t.deepEqual(users, {}, "no users");
    t.deepEqual(products, {}, "no products");

    // The banner offers a CreateUser instead of the demo calls, and every command still works.
    const commands = bannerCommands(shop.banner);
    const actions = commands.map((c) => c.action);
    t.true(actions.includes(`${SERVICES.user}/CreateUser`), shop.banner);
    t.false(actions.includes(`${SERVICES.user}/GetUser`), shop.banner);
    t.false(actions.includes(`${SERVICES.order}/CreateOrder`), shop.banner);
    // Only the admin's token, and the banner says so.
    t.regex(shop.banner, /^A token for an admin \(/m);
    t.notRegex(shop.banner, /export TOKEN=/);
    for (const command of commands) {
      const { stdout } = await runAsPrinted(t, command);
      if (command.action.endsWith("/CreateUser")) {
        t.is(JSON.parse(stdout).user.email, "you@example.com");
      }
    }
  },
  title: (provided = "") => `${provided} on an empty data dir seeds nothing`,
});

test.serial("--no-seed", unseeded, { args: ["--no-seed"] });
test.serial("SHOP_SEED=false", unseeded, { env: { SHOP_SEED: "false" } });

/** Waits for a launcher expected to fail; fails the test if it is still up after 60 s. */
async function failedLaunch(proc: Awaited<ReturnType<typeof spawnLaunch>>) {
  let timer: NodeJS.Timeout | undefined;
  const status = await Promise.race([
    proc.exited,
    new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`still running after 60 s:\n${proc.output()}`)),
        60_000,
      );
    }),
  ]).finally(() => clearTimeout(timer));
  return { ...status, output: proc.output() };
}

for (const taken of registry.names) {
  test.serial(`a taken ${taken} port makes the launcher fail and name ${taken}`, async (t) => {
    const squatter = createServer((socket) => socket.destroy());
    squatter.listen(0, HOST);
    await once(squatter, "listening");
    t.teardown(() => new Promise<void>((resolve) => squatter.close(() => resolve())));
    const port = (squatter.address() as { port: number }).port;

    const proc = await spawnLaunch("start", { ports: { [taken]: port } });
    t.teardown(() => proc.kill());
    const { code, signal, output } = await failedLaunch(proc);
    t.is(signal, null, output);
    t.not(code, 0, output);
    t.regex(output, new RegExp(`\\b${taken} failed to start\\b`));
    t.regex(output, new RegExp(`EADDRINUSE.*${port}`));
    t.false(output.includes("shopmesh is ready"), output);
    for (const [name, other] of Object.entries(proc.ports)) {
      if (name !== taken) t.false(await isListening(other), `${name} left running on ${other}`);
    }
  });
}

test.serial(
  "a second npm start on a running one's ports fails before any banner, naming the port",
  async (t) => {
    const first = await launch(t, "start", { args: ["--no-seed"] });
    const second = await spawnLaunch("start", { ports: first.ports });
    t.teardown(() => second.kill());
    const { code, output } = await failedLaunch(second);
    t.not(code, 0, output);
    t.false(output.includes("shopmesh is ready"), output);
    const [name, port] = Object.entries(first.ports)[0] as [string, number];
    t.regex(
      output,
      new RegExp(`\\b${name} failed to start: EADDRINUSE: ${HOST}:${port} is in use`),
    );
    // The first launch is untouched and still serves.
    for (const address of Object.values(first.addresses)) {
      t.deepEqual(await grpcurl(address, "grpc.health.v1.Health/Check", {}), { status: "SERVING" });
    }
  },
);

test.serial("SHOP_BUILD_DIR without a build stops the launcher before any service", async (t) => {
  const proc = await spawnLaunch("start", { env: { SHOP_BUILD_DIR: "no-such-build" } });
  t.teardown(() => proc.kill());
  const { code, output } = await failedLaunch(proc);
  t.is(code, 1, output);
  t.regex(
    output,
    /SHOP_BUILD_DIR: no no-such-build\/services\/main\.js; run `npm run build` first/,
  );
  for (const [name, port] of Object.entries(proc.ports)) {
    t.false(await isListening(port), `${name} left running on ${port}`);
  }
});

test.serial(
  "a deployment's credentials or profile stop the launcher before any service, named",
  async (t) => {
    const proc = await spawnLaunch("start", {
      env: { SHOP_JWT_ISSUER: "https://auth.shop.example", SHOP_PROFILE: "production" },
    });
    t.teardown(() => proc.kill());
    const { code, output } = await failedLaunch(proc);
    t.is(code, 1, output);
    t.regex(
      output,
      /^SHOP_PROFILE=production, SHOP_JWT_ISSUER: a deployment's settings; a launch runs every replica with the development credentials/m,
    );
    t.false(/ServiceError|\bat /.test(output), output);
    for (const [name, port] of Object.entries(proc.ports)) {
      t.false(await isListening(port), `${name} left running on ${port}`);
    }
  },
);

for (const kind of ["start", "mesh"] as const) {
  test.serial(
    `${kind}: an unknown flag stops the launch before anything starts; --help lists them`,
    async (t) => {
      const typo = await spawnLaunch(kind, { args: ["--postgress"] });
      t.teardown(() => typo.kill());
      const { code, output } = await failedLaunch(typo);
      t.is(code, 2, output);
      t.regex(
        output,
        /unknown --postgress, so nothing started\nusage: npm (start|run mesh) -- \[--no-seed\]/,
      );
      for (const [name, port] of Object.entries(typo.ports)) {
        t.false(await isListening(port), `${name} left running on ${port}`);
      }
      const help = await spawnLaunch(kind, { args: ["--help"] });
      t.teardown(() => help.kill());
      const asked = await failedLaunch(help);
      t.is(asked.code, 0, asked.output);
      t.regex(asked.output, /^ {2}--no-seed {4}no demo data/m);
      t.false(asked.output.includes("shopmesh is ready"), asked.output);
    },
  );
}

test.serial("two launches never share a data directory", async (t) => {
  const first = await launch(t, "start", { args: ["--no-seed"] });
  const second = await spawnLaunch("start", { dataDir: first.dataDir });
  t.teardown(() => second.kill());
  const { code, output } = await failedLaunch(second);
  t.not(code, 0, output);
  t.false(output.includes("shopmesh is ready"), output);
  t.regex(
    output,
    new RegExp(`${first.dataDir} is in use by another launch \\(pid ${first.child.pid}\\)`),
  );
  for (const [name, port] of Object.entries(second.ports)) {
    t.false(await isListening(port), `the second launch left ${name} running on ${port}`);
  }
  const { users } = await grpcurl(first.addresses.user, `${SERVICES.user}/ListUsers`, {});
  t.is(users, undefined, "the second launch wrote nothing (no demo data)");
});
