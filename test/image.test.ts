// The image, without a Docker engine: the Dockerfile's own commands run here, in a copy laid out
// as its stages are. The build stage's files, its `npm run build` and `npm prune --omit=dev`; then
// the runtime stage's files only, and the services run as compose runs them: migrate, serve
// (compiled JavaScript, `node`, no tsx), the health check, the seed, and an order end to end,
// each service exporting its spans over another OTLP protocol.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { existsSync, readdirSync } from "node:fs";
import { copyFile, cp, mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { parse } from "yaml";
import { RUNTIME_ENV } from "../deploy/settings.js";
import { OrderServiceService, OrderState } from "../gen/ts/shop/order/v1/order.js";
import { createClient } from "../kit/client/index.js";
import { bearer } from "../kit/middleware/auth.js";
import { defaultClientMiddleware } from "../kit/middleware/index.js";
import { channelCredentials, readTls } from "../kit/security/tls.js";
import { identityFiles, makeCredentials, signToken } from "../scripts/lib/credentials.js";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { freePorts } from "../scripts/lib/ports.js";
import { registry } from "../services/registry.js";
import { eventually } from "./helpers/eventually.js";
import { exec } from "./helpers/exec.js";
import { startOtlpReceiver } from "./helpers/otlp.js";

interface Stage {
  name: string;
  from: string;
  lines: string[];
}

/** The Dockerfile's stages and their instructions, continuation lines joined. */
function stages(dockerfile: string): Stage[] {
  const lines = dockerfile
    .replace(/\\\n\s*/g, " ")
    .split("\n")
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith("#"));
  const result: Stage[] = [];
  for (const line of lines) {
    const from = /^FROM (\S+)(?: AS (\S+))?$/.exec(line);
    if (from) result.push({ from: from[1] as string, name: from[2] ?? "", lines: [] });
    else result.at(-1)?.lines.push(line);
  }
  return result;
}

const copies = (stage: Stage, source?: string) =>
  stage.lines
    .map((line) => /^COPY (?:--from=(\S+) )?(.+) (\S+)$/.exec(line))
    .filter((match): match is RegExpExecArray => match !== null && match[1] === source)
    .flatMap((match) =>
      (match[2] as string).split(/\s+/).map((from) => ({ from, to: match[3] as string })),
    );

/** Copies like COPY: a folder's contents into the destination folder, a file into it or to it. */
async function copyLike(fromRoot: string, from: string, toRoot: string, to: string) {
  const source = path.join(fromRoot, from);
  const target =
    to.endsWith("/") || to === "." || to === "./"
      ? path.join(toRoot, to, path.basename(from))
      : path.join(toRoot, to);
  await cp(source, target, { recursive: true });
}

/** OTLP over HTTP, as a collector takes it: each POST to /v1/traces, its type and body. */
async function startOtlpHttp(): Promise<{
  endpoint: string;
  posts: { contentType: string; body: Buffer }[];
  close(): void;
}> {
  const posts: { contentType: string; body: Buffer }[] = [];
  const server = createServer(async (request, response) => {
    const chunks: Buffer[] = [];
    for await (const chunk of request) chunks.push(chunk as Buffer);
    if (request.method === "POST" && request.url === "/v1/traces") {
      posts.push({
        contentType: request.headers["content-type"] ?? "",
        body: Buffer.concat(chunks),
      });
    }
    response.writeHead(200, { "content-type": request.headers["content-type"] ?? "" });
    response.end();
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const { port } = server.address() as AddressInfo;
  return { endpoint: `http://127.0.0.1:${port}`, posts, close: () => server.close() };
}

function stopAll(children: ChildProcess[]) {
  return Promise.all(
    children.map(async (child) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGTERM");
      await once(child, "exit");
    }),
  );
}

test("the image's own commands: compiled JavaScript on production dependencies serves the mesh", async (t) => {
  t.timeout(240_000);
  const dockerfile = await readFile(path.join(repoRoot, "Dockerfile"), "utf8");
  const [build, probe, runtime] = stages(dockerfile) as [Stage, Stage, Stage];
  t.is(build.name, "build");
  t.is(probe.name, "probe");
  // The Node.js LTS line of engines and .tools/node, in both Node stages.
  const major = process.versions.node.split(".")[0];
  t.is(build.from, `node:${major}-bookworm-slim`);
  t.is(runtime.from, build.from);
  const pkg = JSON.parse(await readFile(path.join(repoRoot, "package.json"), "utf8"));
  t.is(pkg.engines.node, `>=${major}.11`);
  // The same health probe release as the tests use (scripts/tools.sh).
  const tools = await readFile(path.join(repoRoot, "scripts/tools.sh"), "utf8");
  const probeVersion = /^GRPC_HEALTH_PROBE_VERSION=(\S+)$/m.exec(tools)?.[1];
  t.true(probe.lines.some((line) => line.includes(`grpc-health-probe@${probeVersion}`)));

  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-image-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const buildDir = path.join(dir, "build");
  const appDir = path.join(dir, "app");
  await mkdir(buildDir);
  await mkdir(appDir);

  // Build stage: its COPYs; `npm ci` stands in as the install CI already ran from the same
  // lockfile (hard links: nothing below writes into a package's files, and npm's own state file
  // is copied for real).
  const runs = build.lines.filter((line) => line.startsWith("RUN "));
  const install = runs.findIndex((line) => /^RUN npm ci\b/.test(line));
  t.true(install >= 0, "the build stage installs with npm ci");
  t.false(runs[install]?.includes("--omit=dev"), "the build stage needs the compiler");
  for (const { from, to } of copies(build)) await copyLike(repoRoot, from, buildDir, to);
  const linked = await exec("cp", ["-al", "node_modules", path.join(buildDir, "node_modules")]);
  t.is(linked.code, 0, linked.stderr);
  const state = path.join("node_modules", ".package-lock.json");
  await rm(path.join(buildDir, state));
  await copyFile(path.join(repoRoot, state), path.join(buildDir, state));
  for (const run of runs.slice(install + 1)) {
    const result = await exec("sh", ["-c", run.slice(4)], { cwd: buildDir, timeoutMs: 180_000 });
    t.is(result.code, 0, `${run}\n${result.stdout}\n${result.stderr}`);
  }

  // Runtime stage: only what it copies from the build stage.
  for (const { from, to } of copies(runtime, "build")) {
    await copyLike(buildDir, path.relative("/app", from), appDir, to);
  }
  t.deepEqual(readdirSync(appDir).sort(), ["dist", "node_modules", "package.json"]);
  for (const dev of ["tsx", "typescript", "ava", "@biomejs/biome", "ts-proto"]) {
    t.false(existsSync(path.join(appDir, "node_modules", dev)), `${dev} is not in the image`);
  }
  t.true(existsSync(path.join(appDir, "dist/gen/descriptor/shop.binpb")));

  const cmd = JSON.parse(/^CMD (.+)$/m.exec(runtime.lines.join("\n"))?.[1] ?? "[]") as string[];
  t.deepEqual(cmd.slice(0, 1), ["node"]);
  // ENV KEY=value pairs; a value with spaces is in double quotes.
  const imageEnv = Object.fromEntries(
    runtime.lines
      .filter((line) => line.startsWith("ENV "))
      .flatMap((line) => [...line.slice(4).matchAll(/(\w+)=(?:"([^"]*)"|(\S+))/g)])
      .map(([, key, quoted, bare]) => [key, quoted ?? bare]),
  );
  t.is(imageEnv.NODE_ENV, "production");
  for (const [name, value] of Object.entries(RUNTIME_ENV)) {
    t.is(imageEnv[name], value, `${name}: the image runs node as the benchmark measures it`);
  }

  // Run it as compose does, on loopback and free ports, in the production profile with a
  // credentials set of the mesh's own, as `npm run certs -- --production` makes it.
  const compose = parse(await readFile(path.join(repoRoot, "deploy/compose.yaml"), "utf8")) as {
    services: Record<string, { command?: string[]; environment?: Record<string, string> }>;
    secrets: Record<string, { file: string }>;
  };
  const secretsDir = path.join(dir, "secrets");
  await mkdir(secretsDir);
  await makeCredentials(secretsDir, {
    caName: "shopmesh mesh CA",
    keyIdPrefix: "shopmesh-",
    pageTokenSecret: true,
  });
  const free = await freePorts(2 * registry.names.length);
  const ports: Record<string, number> = Object.fromEntries(
    registry.names.map((name, i) => [name, free[i] as number]),
  );
  const healthPorts: Record<string, number> = Object.fromEntries(
    registry.names.map((name, i) => [name, free[registry.names.length + i] as number]),
  );
  const base = {
    ...imageEnv,
    SHOP_HOST: "127.0.0.1",
    SHOP_DATA_DIR: path.join(dir, "data"),
    SHOP_LOG_LEVEL: "warn",
  };
  await mkdir(base.SHOP_DATA_DIR);
  const local = (env: Record<string, string> = {}) =>
    Object.fromEntries(
      Object.entries(env).map(([key, value]) => {
        // user:50051 → 127.0.0.1:<its free port>
        const dns = /^([a-z0-9]+):\d+$/.exec(value);
        if (dns && ports[dns[1] as string]) return [key, `127.0.0.1:${ports[dns[1] as string]}`];
        // /run/secrets/<name> → the file compose mounts there
        const secret = /^\/run\/secrets\/(\w+)$/.exec(value);
        const file = secret && compose.secrets[secret[1] as string]?.file;
        if (file) return [key, path.join(secretsDir, path.basename(file))];
        // The volume compose mounts at /data → this run's own folder, never the host's /data.
        if (key === "SHOP_DATA_DIR") return [key, base.SHOP_DATA_DIR];
        return [key, value];
      }),
    );

  // Spans go out as an operator would send them to a collector: every OTLP protocol, one each.
  const otlpGrpc = await startOtlpReceiver();
  t.teardown(() => otlpGrpc.stop());
  const otlpHttp = await startOtlpHttp();
  t.teardown(() => otlpHttp.close());
  const protocols: Record<string, { endpoint: string; protocol: string }> = {
    user: { endpoint: otlpGrpc.endpoint, protocol: "grpc" },
    product: { endpoint: otlpHttp.endpoint, protocol: "http/protobuf" },
    order: { endpoint: otlpHttp.endpoint, protocol: "http/json" },
  };

  const children: ChildProcess[] = [];
  t.teardown(() => stopAll(children));
  for (const service of registry.services) {
    const migrate = compose.services[`${service.name}-migrate`];
    const [, ...migrateArgs] = migrate?.command ?? [];
    t.is(migrate?.command?.[0], "node");
    const migrated = await exec(process.execPath, migrateArgs, {
      cwd: appDir,
      env: { ...base, ...local(migrate?.environment) },
    });
    t.is(migrated.code, 0, migrated.stderr);

    const started = Date.now();
    const child = spawn(process.execPath, cmd.slice(1), {
      cwd: appDir,
      env: {
        ...process.env,
        ...base,
        ...local(compose.services[service.name]?.environment),
        SHOP_HOST: "127.0.0.1",
        SHOP_PORT: String(ports[service.name]),
        SHOP_HEALTH_PORT: String(healthPorts[service.name]),
        OTEL_EXPORTER_OTLP_ENDPOINT: protocols[service.name]?.endpoint ?? "",
        OTEL_EXPORTER_OTLP_PROTOCOL: protocols[service.name]?.protocol ?? "",
        OTEL_TRACES_SAMPLER: "parentbased_always_on",
      },
      stdio: ["ignore", "ignore", "pipe"],
    });
    children.push(child);
    let stderr = "";
    child.stderr?.on("data", (chunk) => {
      stderr += chunk;
    });
    // compose's health check, against the free health port: the service port wants mTLS.
    await eventually(
      `${service.name} SERVING`,
      async () => {
        if (child.exitCode !== null) throw new Error(`${service.name} exited: ${stderr}`);
        const check = await exec(tool("grpc-health-probe"), [
          `-addr=127.0.0.1:${healthPorts[service.name]}`,
          `-service=${service.protoServices[0]}`,
          "-connect-timeout=1s",
          "-rpc-timeout=1s",
        ]);
        return check.code === 0 ? true : undefined;
      },
      { timeoutMs: 20_000 },
    );
    t.log(`${service.name}: SERVING ${Date.now() - started} ms after spawn`);
  }

  const seed = compose.services.seed;
  const seedArgs = seed?.command?.slice(1) ?? [];
  const seeded = await exec(process.execPath, seedArgs, {
    cwd: appDir,
    env: { ...base, ...local(seed?.environment) },
  });
  t.is(seeded.code, 0, seeded.stderr);
  const demo = JSON.parse(seeded.stdout.trim().split("\n").at(-1) as string);

  // A shopper's order, over mutual TLS as the cli identity, with a token the mesh's key signed.
  const token = await signToken({
    user: demo.user_id,
    dir: secretsDir,
    issuer: compose.services.order?.environment?.SHOP_JWT_ISSUER as string,
    audience: compose.services.order?.environment?.SHOP_JWT_AUDIENCE as string,
  });
  const orders = createClient(OrderServiceService, `127.0.0.1:${ports.order}`, {
    transport: channelCredentials(readTls(identityFiles(secretsDir, "cli")), "order"),
    middleware: [...defaultClientMiddleware({ defaultTimeoutMs: 10_000 }), bearer(token)],
  });
  t.teardown(() => orders.close());
  const { order } = await orders.createOrder({
    userId: demo.user_id,
    lines: [{ productId: demo.product_ids[0], quantity: 1 }],
    requestId: "image-test-1",
  });
  t.is(order?.state, OrderState.ORDER_STATE_CONFIRMED);

  // SIGTERM: a graceful stop, exit 0.
  const exits = children.map((child) => once(child, "exit"));
  for (const child of children.reverse()) child.kill("SIGTERM");
  for (const [code] of await Promise.all(exits)) t.is(code, 0);

  // Each exported the order's spans before it exited.
  const served = await eventually("user's spans over OTLP/gRPC", () =>
    otlpGrpc.spans().find((span) => span.name === "shop.user.v1.UserService/GetUser"),
  );
  t.is(served.service, "user");
  // A span's name is its UTF-8 bytes in either encoding.
  const sent = (contentType: string, span: string) =>
    otlpHttp.posts.some((post) => post.contentType === contentType && post.body.includes(span));
  t.true(
    sent("application/x-protobuf", "shop.product.v1.InventoryService/ReserveStock"),
    "product exports over OTLP/HTTP with protobuf",
  );
  t.true(
    sent("application/json", "shop.order.v1.OrderService/CreateOrder"),
    "order exports over OTLP/HTTP with JSON",
  );
});
