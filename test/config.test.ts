import { mkdtemp, rm } from "node:fs/promises";
import { type AddressInfo, createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import { connectDatabase, openDatabase } from "../kit/db/index.js";
import { dependencyAddresses } from "../kit/runtime/index.js";
import { tool } from "../scripts/lib/launcher.js";
import { registry } from "../services/registry.js";
import { compiledEntry, serviceProcess } from "./helpers/build.js";
import { eventually } from "./helpers/eventually.js";
import { exec } from "./helpers/exec.js";

const cases: [service: string, env: Record<string, string>, message: RegExp][] = [
  [
    "order",
    { SHOP_RESERVATION_TTL_MS: "7200000" },
    /SHOP_RESERVATION_TTL_MS must be between 1000 and 3600000, got "7200000"/,
  ],
  ["order", { SHOP_WATCH_POLL_MS: "0" }, /SHOP_WATCH_POLL_MS must be between 10 and 2147483647/],
  [
    "order",
    { SHOP_DEPENDENCY_TIMEOUT_MS: "-1" },
    /SHOP_DEPENDENCY_TIMEOUT_MS must be between 1 and 2147483647/,
  ],
  [
    "product",
    { SHOP_RESERVATION_SWEEP_MS: "0" },
    /SHOP_RESERVATION_SWEEP_MS must be between 10 and 2147483647/,
  ],
  [
    "user",
    { SHOP_MAX_CONNECTION_AGE_MS: "-1000" },
    /SHOP_MAX_CONNECTION_AGE_MS must be between 0 and 1952257860/,
  ],
  // Its timer, with grpc-js's 10% of jitter, would pass Node's limit and fire at once.
  [
    "user",
    { SHOP_MAX_CONNECTION_AGE_MS: "2000000000" },
    /SHOP_MAX_CONNECTION_AGE_MS must be between 0 and 1952257860/,
  ],
  // The driver's reply timer is 2 s longer. Read for PostgreSQL only; refused before connecting.
  [
    "user",
    {
      SHOP_DATABASE_STATEMENT_TIMEOUT_MS: "2147483000",
      SHOP_DATABASE_URL: "postgres://shop@127.0.0.1:64999/shop",
    },
    /SHOP_DATABASE_STATEMENT_TIMEOUT_MS must be between 0 and 2147481647/,
  ],
  [
    "user",
    { SHOP_SHUTDOWN_GRACE_MS: "-5" },
    /SHOP_SHUTDOWN_GRACE_MS must be between 0 and 2147483647/,
  ],
  ["user", { SHOP_MAX_PAGES_IN_FLIGHT: "-1" }, /SHOP_MAX_PAGES_IN_FLIGHT must be at least 0/],
  [
    "user",
    { SHOP_PAGE_WRITE_TIMEOUT_MS: "-1" },
    /SHOP_PAGE_WRITE_TIMEOUT_MS must be between 0 and 2147483647/,
  ],
  [
    "user",
    { OTEL_EXPORTER_OTLP_PROTOCOL: "grcp", OTEL_EXPORTER_OTLP_ENDPOINT: "http://127.0.0.1:4317" },
    /OTEL_EXPORTER_OTLP_PROTOCOL: the OTLP protocol must be one of grpc, http\/protobuf, http\/json, got "grcp"/,
  ],
  // Refused before any endpoint is set, too.
  [
    "order",
    { OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: "foo" },
    /OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: the OTLP protocol must be one of grpc, http\/protobuf, http\/json, got "foo"/,
  ],
  [
    "product",
    { SHOP_PAGE_TOKEN_SECRET_FILE: "/does/not/exist" },
    /SHOP_PAGE_TOKEN_SECRET_FILE: cannot read \/does\/not\/exist \(ENOENT\)/,
  ],
  ["product", { SHOP_PORT: "-1" }, /SHOP_PORT must be between 0 and 65535, got "-1"/],
  ["product", { SHOP_PORT: "70000" }, /SHOP_PORT must be between 0 and 65535, got "70000"/],
  [
    "product",
    { SHOP_LOG_LEVEL: "verbose" },
    /SHOP_LOG_LEVEL must be one of fatal, error, warn, info, debug, trace, silent, got "verbose"/,
  ],
  [
    "product",
    { SHOP_HEALTH_PORT: "99999" },
    /SHOP_HEALTH_PORT must be between 0 and 65535, got "99999"/,
  ],
  [
    "product",
    { SHOP_METRICS_PORT: "-1", SHOP_METRICS: "true" },
    /SHOP_METRICS_PORT must be between 0 and 65535, got "-1"/,
  ],
  // No metrics port follows from 64999 (+ 1000): only one that is unset must be derived.
  [
    "product",
    { SHOP_METRICS_PORT: "65536", SHOP_PORT: "64999", SHOP_METRICS: "true" },
    /SHOP_METRICS_PORT must be between 0 and 65535, got "65536"/,
  ],
  ["product", { SHOP_JWKS_FILE: "/etc/hostname" }, /SHOP_JWKS_FILE: \/etc\/hostname is not JSON/],
  ["product", { SHOP_JWKS_FILE: "/etc" }, /SHOP_JWKS_FILE: cannot read \/etc \(EISDIR\)/],
  [
    "product",
    {
      SHOP_TLS_CERT_FILE: "/does/not/exist",
      SHOP_TLS_KEY_FILE: "/etc/hostname",
      SHOP_TLS_CA_FILE: "/etc/hostname",
    },
    /SHOP_TLS_CERT_FILE: cannot read \/does\/not\/exist \(ENOENT\)/,
  ],
  // Files that read but hold no usable PEM (npm test's pretest makes .certs).
  [
    "product",
    {
      SHOP_TLS_CERT_FILE: ".certs/product.key",
      SHOP_TLS_KEY_FILE: ".certs/product.key",
      SHOP_TLS_CA_FILE: ".certs/ca.crt",
    },
    /SHOP_TLS_CERT_FILE: \.certs\/product\.key is not a PEM certificate/,
  ],
  [
    "product",
    {
      SHOP_TLS_KEY_FILE: ".certs/user.key",
      SHOP_TLS_CERT_FILE: ".certs/product.crt",
      SHOP_TLS_CA_FILE: ".certs/ca.crt",
    },
    /SHOP_TLS_KEY_FILE: \.certs\/user\.key is not the key of the certificate in \.certs\/product\.crt/,
  ],
  [
    "product",
    {
      SHOP_TLS_CA_FILE: "/etc/hostname",
      SHOP_TLS_CERT_FILE: ".certs/product.crt",
      SHOP_TLS_KEY_FILE: ".certs/product.key",
    },
    /SHOP_TLS_CA_FILE: \/etc\/hostname is not a PEM certificate/,
  ],
  [
    "order",
    { SHOP_USER_ADDR: "127.0.0.1:99999" },
    /SHOP_USER_ADDR must be host:port, ip:port,ip:port or dns:\/\/\/name:port, got "127\.0\.0\.1:99999"/,
  ],
  [
    "order",
    { SHOP_PRODUCT_ADDR: "dns:///product" },
    /SHOP_PRODUCT_ADDR must be host:port, .*, got "dns:\/\/\/product"/,
  ],
  // Number() reads these as 0, 57344 and 1000.
  ["product", { SHOP_PORT: " " }, /SHOP_PORT must be an integer, got " "/],
  ["product", { SHOP_HEALTH_PORT: "0xE000" }, /SHOP_HEALTH_PORT must be an integer, got "0xE000"/],
  [
    "user",
    { SHOP_SHUTDOWN_GRACE_MS: "1e3" },
    /SHOP_SHUTDOWN_GRACE_MS must be an integer, got "1e3"/,
  ],
  // Longer than a Node timer waits: it would fire at once, over and over.
  [
    "product",
    { SHOP_RESERVATION_SWEEP_MS: "3000000000" },
    /SHOP_RESERVATION_SWEEP_MS must be between 10 and 2147483647, got "3000000000"/,
  ],
  [
    "order",
    { SHOP_USER_ADDR: "http://127.0.0.1:50051" },
    /SHOP_USER_ADDR must be host:port, .*, got "http:\/\/127\.0\.0\.1:50051"/,
  ],
  [
    "order",
    { SHOP_PRODUCT_ADDR: "::1:50052" },
    /SHOP_PRODUCT_ADDR must be host:port, .*, got "::1:50052"/,
  ],
  [
    "product",
    { SHOP_DATABASE: "/etc/passwd" },
    /SHOP_DATABASE: cannot open \/etc\/passwd: file is not a database/,
  ],
  [
    "product",
    { SHOP_DATA_DIR: "/etc/hostname" },
    /SHOP_DATA_DIR: cannot open \/etc\/hostname\/product\.sqlite: EEXIST/,
  ],
  [
    "product",
    { SHOP_DATABASE_URL: "postgres://shop:secret@127.0.0.1:99999/shop" },
    /SHOP_DATABASE_URL is not a URL that parses$/m,
  ],
  [
    "product",
    { SHOP_DATABASE_URL: "postgres://shop:secret@127.0.0.1:64999/shop" },
    /SHOP_DATABASE_URL: cannot open postgres:\/\/shop:\*\*\*@127\.0\.0\.1:64999\/shop: connect ECONNREFUSED/,
  ],
  // A Secret's empty key: not each replica on a SQLite file of its own.
  ["product", { SHOP_DATABASE_URL: "" }, /SHOP_DATABASE_URL is set but empty/],
  ["order", { SHOP_ORDER_DATABASE_URL: "" }, /SHOP_ORDER_DATABASE_URL is set but empty/],
  // Read as the database opens: the setting is named alone, not as a database that failed.
  [
    "product",
    {
      SHOP_DATABASE_POOL_MAX: "0",
      SHOP_DATABASE_URL: "postgres://shop:secret@127.0.0.1:64999/shop",
    },
    /^product: failed to start: SHOP_DATABASE_POOL_MAX must be at least 1, got "0"$/m,
  ],
  [
    "user",
    { SHOP_SQLITE_DRIVER: "sqlite4" },
    /^user: failed to start: SHOP_SQLITE_DRIVER must be one of better-sqlite3, sqlite3, got "sqlite4"$/m,
  ],
  [
    "user",
    { SHOP_SQLITE_SYNC: "never" },
    /^user: failed to start: SHOP_SQLITE_SYNC must be one of before-reply, at-checkpoint, got "never"$/m,
  ],
  [
    "product",
    { SHOP_SERVICE: "shipping" },
    /the first argument, else SHOP_SERVICE, must be one of user, product, order, got "shipping"/,
  ],
];

/** Starts a service process with `env` over the defaults below; resolves once it has exited. */
async function startWith(t: ExecutionContext, env: Record<string, string>) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-config-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return exec(process.execPath, [await compiledEntry("services/main.ts")], {
    env: { SHOP_DATA_DIR: dir, SHOP_PORT: "0", SHOP_METRICS: "false", ...env },
    timeoutMs: 30_000,
  });
}

for (const [service, env, message] of cases) {
  test.serial(`${service} with ${Object.entries(env)[0]?.join("=")} stops at start`, async (t) => {
    const run = await startWith(t, { SHOP_SERVICE: service, ...env });
    t.is(run.code, 1, run.stderr);
    t.regex(run.stderr, message);
    t.is(run.stderr.trim().split("\n").length, 1, run.stderr);
  });
}

for (const variable of ["SHOP_PORT", "SHOP_HEALTH_PORT", "SHOP_METRICS_PORT"]) {
  test.serial(`product on a ${variable} another process holds stops at start`, async (t) => {
    const holder = createServer();
    const held = await new Promise<number>((resolve) =>
      holder.listen(0, "127.0.0.1", () => resolve((holder.address() as AddressInfo).port)),
    );
    t.teardown(() => holder.close());
    const run = await startWith(t, {
      SHOP_SERVICE: "product",
      SHOP_METRICS: "true",
      SHOP_METRICS_PORT: "0",
      [variable]: String(held),
    });
    t.is(run.code, 1, run.stderr);
    // One line, which names the setting; grpc-js's own words go to the JSON log on stdout.
    t.is(
      run.stderr.trim(),
      `product: failed to start: ${variable}: cannot listen on 127.0.0.1:${held}: listen EADDRINUSE: address already in use 127.0.0.1:${held}`,
    );
  });
}

test.serial("a migration that stops the start is named, with what it found", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-config-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const file = path.join(dir, "user.sqlite");
  // Two users whose emails are one text in two Unicode forms, as a build before 0004 kept them.
  const db = await openDatabase(file, registry.get("user").migrations.slice(0, 3));
  await db("users").insert(
    ["jos\u00e9@example.com", "jose\u0301@example.com"].map((email, i) => ({
      user_id: `usr_${i}`,
      email,
      email_key: email,
      display_name: "José",
      create_time: 0,
      update_time: 0,
    })),
  );
  await db.destroy();
  const run = await startWith(t, { SHOP_SERVICE: "user", SHOP_DATA_DIR: dir });
  t.is(run.code, 1, run.stderr);
  t.is(run.stderr.trim().split("\n").length, 1, run.stderr);
  t.true(
    run.stderr.startsWith(
      `user: failed to start: SHOP_DATA_DIR: cannot migrate ${file}: migration 0004_email_key_normalized failed, and none of its batch was kept: `,
    ),
    run.stderr,
  );
  t.regex(
    run.stderr,
    /usr_0 <.*> \(jos\\u\{e9\}@example\.com\) = usr_1 <.*> \(jose\\u\{301\}@example\.com\)/,
  );
});

// A database URL's password reaches no log line, however the URL is mistyped or spelt.
const leaks: [env: Record<string, string>, message: RegExp][] = [
  [
    { SHOP_DATABASE_URL: '"postgres://shop:hunter2@127.0.0.1:64999/shop"' },
    /SHOP_DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL/,
  ],
  [
    { SHOP_DATABASE_URL: "postgress://shop:hunter2@127.0.0.1:64999/shop" },
    /SHOP_DATABASE_URL must be a postgres:\/\/ or postgresql:\/\/ URL, got "postgress:\/\/shop:\*\*\*@/,
  ],
  [
    { SHOP_DATABASE_URL: "postgres://shop@127.0.0.1:64999/shop?password=hunter2" },
    /SHOP_DATABASE_URL: cannot open postgres:\/\/shop@127\.0\.0\.1:64999\/shop\?password=\*\*\*: connect ECONNREFUSED/,
  ],
];

for (const [env, message] of leaks) {
  test.serial(`${Object.values(env)[0]} stops at start without its password`, async (t) => {
    const run = await startWith(t, { SHOP_SERVICE: "user", ...env });
    t.is(run.code, 1, run.stderr);
    t.regex(run.stderr, message);
    t.false(`${run.stdout}${run.stderr}`.includes("hunter2"), run.stderr);
  });
}

test.serial(
  "scripts/migrate.ts names the variable of a database it cannot open, without its password",
  async (t) => {
    const run = await exec(process.execPath, [await compiledEntry("scripts/migrate.ts")], {
      env: {
        SHOP_SERVICE: "order",
        SHOP_ORDER_DATABASE_URL: "postgres://shop:hunter2@127.0.0.1:64999/shop",
      },
      timeoutMs: 30_000,
    });
    t.is(run.code, 1, run.stderr);
    t.regex(
      run.stderr,
      /^migrate: SHOP_ORDER_DATABASE_URL: cannot open postgres:\/\/shop:\*\*\*@127\.0\.0\.1:64999\/shop: connect ECONNREFUSED/m,
    );
    t.false(`${run.stdout}${run.stderr}`.includes("hunter2"), run.stderr);
  },
);

test.serial(
  "scripts/migrate.ts in the production profile refuses an off-host PostgreSQL without TLS",
  async (t) => {
    const run = await exec(process.execPath, [await compiledEntry("scripts/migrate.ts")], {
      env: {
        SHOP_PROFILE: "production",
        SHOP_SERVICE: "order",
        SHOP_ORDER_DATABASE_URL: "postgres://shop:hunter2@db.invalid:5432/shop",
      },
      timeoutMs: 30_000,
    });
    t.is(run.code, 1, run.stderr);
    t.regex(
      run.stderr,
      /^migrate: the production profile reaches PostgreSQL at db\.invalid over TLS only: .* to SHOP_ORDER_DATABASE_URL/m,
    );
  },
);

/** A free port on `host`. */
const freePort = (host: string) =>
  new Promise<number>((resolve, reject) => {
    const server = createServer().listen(0, host, () => {
      const { port } = server.address() as AddressInfo;
      server.close(() => resolve(port));
    });
    server.once("error", reject);
  });

/** A product service process with `env` over this one's, killed when `t` ends. */
async function spawnProduct(t: ExecutionContext, env: Record<string, string>): Promise<void> {
  await serviceProcess(t, { SHOP_SERVICE: "product", ...env }, "ignore");
}
test.serial("SHOP_HOST=::1 serves gRPC and metrics on IPv6 loopback", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-config-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const [port, metricsPort] = [await freePort("::1"), await freePort("::1")];
  await spawnProduct(t, {
    SHOP_DATA_DIR: dir,
    SHOP_HOST: "::1",
    SHOP_PORT: String(port),
    SHOP_METRICS_PORT: String(metricsPort),
  });
  const health = await eventually(
    "the product service SERVING on [::1]",
    async () => {
      const run = await exec(tool("grpcurl"), [
        "-plaintext",
        `[::1]:${port}`,
        "grpc.health.v1.Health/Check",
      ]);
      return run.code === 0 ? run.stdout : undefined;
    },
    { timeoutMs: 30_000, intervalMs: 250 },
  );
  t.regex(health, /SERVING/);
  const metrics = await fetch(`http://[::1]:${metricsPort}/metrics`);
  t.is(metrics.status, 200);
});

test.serial("SHOP_<NAME>_ADDR takes every form README names, and other schemes' targets", (t) => {
  const saved = process.env.SHOP_USER_ADDR;
  t.teardown(() => {
    if (saved === undefined) delete process.env.SHOP_USER_ADDR;
    else process.env.SHOP_USER_ADDR = saved;
  });
  for (const address of [
    "user:50051",
    "10.0.0.1:50051,10.0.0.2:50051",
    "[::1]:50051",
    "dns:///user.shop.svc.cluster.local:50051",
    "unix:///run/user.sock",
  ]) {
    process.env.SHOP_USER_ADDR = address;
    t.true(Object.values(dependencyAddresses(registry, "order")).includes(address), address);
  }
});

test.serial("SHOP_METRICS_PORT serves though none follows from SHOP_PORT", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-config-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // The product's offset (+ 1000) would put its metrics on 65990, past the last port.
  const [port, metricsPort] = [64990, 64991];
  await spawnProduct(t, {
    SHOP_DATA_DIR: dir,
    SHOP_PORT: String(port),
    SHOP_METRICS_PORT: String(metricsPort),
  });
  const status = await eventually(
    "the product service's metrics",
    async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).status,
    { timeoutMs: 30_000, intervalMs: 250 },
  );
  t.is(status, 200);
});

test("a program's own database options are checked as the settings are", (t) => {
  const url = "postgres://shop:secret@127.0.0.1:64999/shop";
  for (const [options, message] of [
    [{ poolMax: 0 }, "poolMax must be an integer of at least 1, got 0"],
    [{ poolMax: 2.5 }, "poolMax must be an integer of at least 1, got 2.5"],
    [{ statementTimeoutMs: -1 }, "statementTimeoutMs must be an integer of at least 0, got -1"],
  ] as const) {
    t.throws(() => connectDatabase(url, options), { instanceOf: RangeError, message });
  }
  const db = connectDatabase(url, { poolMax: 1, statementTimeoutMs: 0 });
  t.teardown(() => db.destroy());
  t.is(db.client.config.pool.max, 1);
});

test.serial(
  "a mistyped SHOP_ variable is logged at warn as the service starts, with the setting meant",
  async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-config-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const child = await serviceProcess(t, {
      SHOP_SERVICE: "order",
      SHOP_DATA_DIR: dir,
      SHOP_PORT: "0",
      SHOP_METRICS: "false",
      SHOP_RECONCILE_MSS: "100",
    });
    let output = "";
    child.stdout?.on("data", (chunk) => {
      output += chunk;
    });
    const lines = await eventually(
      "the order service's first log lines",
      async () => (output.includes('"msg":"serving') ? output : undefined),
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    const warned = lines
      .split("\n")
      .filter((line) => line.startsWith("{"))
      .map((line) => JSON.parse(line))
      .filter((line) => line.setting !== undefined);
    t.like(warned, [
      {
        level: 40,
        setting: "SHOP_RECONCILE_MSS",
        msg: "SHOP_RECONCILE_MSS is not a setting, and is ignored: did you mean SHOP_RECONCILE_MS?",
      },
    ]);
    t.is(warned.length, 1);
  },
);
