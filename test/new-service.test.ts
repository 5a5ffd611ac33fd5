// `npm run new-service -- payment` in a temporary copy of the repo: the scaffold is a working
// service made of its proto, at most 160 hand-written lines and one registry line. The gates pass
// (generate, lint, the breaking gate, the typecheck), its handler test passes (on PostgreSQL too:
// the scaffold adds it to the storage variants), and the copy's own
// `npm start` and `npm run mesh` serve it: the banner lists it, Envoy routes it, `grpcurl list`
// through Envoy shows it.
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { repoRoot } from "../scripts/lib/launcher.js";
import { nameRefusal, pluralOf } from "../scripts/lib/reserved-names.js";
import { registry } from "../services/registry.js";
import { exec } from "./helpers/exec.js";

/** Every file of a tree (tracked and untracked, as git sees them), relative to it. */
async function filesOf(root: string): Promise<string[]> {
  const listed = await exec("git", ["ls-files", "-co", "--exclude-standard"], { cwd: root });
  // node_modules and .tools are links to the repo's, not files of the copy.
  return listed.stdout
    .split("\n")
    .filter((file) => file && file !== "node_modules" && file !== ".tools")
    .sort();
}

/** Every file of a tree with its text. */
async function snapshot(root: string): Promise<Map<string, string>> {
  const files = await filesOf(root);
  return new Map(
    await Promise.all(
      files.map(async (file) => [file, await readFile(path.join(root, file), "utf8")] as const),
    ),
  );
}

/** What a copy needs besides the repo's files: the installed packages and tools. */
async function copyRepo(): Promise<string> {
  const copy = await mkdtemp(path.join(tmpdir(), "shopmesh-scaffold-"));
  const tar = await exec(
    "sh",
    ["-c", `git ls-files -co --exclude-standard | tar -cf - -T - | tar -xf - -C '${copy}'`],
    { cwd: repoRoot },
  );
  if (tar.code !== 0) throw new Error(tar.stderr);
  await symlink(path.join(repoRoot, "node_modules"), path.join(copy, "node_modules"));
  await symlink(path.join(repoRoot, ".tools"), path.join(copy, ".tools"));
  // A repository of its own, so that git ls-files lists the copy's files.
  await exec("git", ["init", "-q"], { cwd: copy });
  return copy;
}

// Generated from proto/ and the registry, so a new service changes them without a hand edit.
const GENERATED = [
  /^gen\//,
  /^docs\/api\//,
  /^deploy\/envoy\/envoy(\.compose)?\.yaml$/,
  /^deploy\/compose\.yaml$/,
  /^deploy\/k8s\//,
  /^deploy\/prometheus\/prometheus\.yml$/,
];

/** Runs in the copy what the outer test cannot: its own launchers, with its own registry. */
const LAUNCH_CHECK = `import test from "ava";
import { ADMIN_TOKEN, CERTS, edgeFetch } from "./helpers/credentials.js";
import { exec, grpcurl } from "./helpers/exec.js";
import { tool } from "../scripts/lib/launcher.js";
import { launch } from "./helpers/launch.js";

const SERVICE = "shop.payment.v1.PaymentService";

test.serial("npm start's banner lists payment, which serves", async (t) => {
  const shop = await launch(t, "start", { args: ["--no-seed"] });
  t.regex(shop.banner, /^  payment +127\\.0\\.0\\.1:\\d+ +shop\\.payment\\.v1\\.PaymentService$/m);
  const body = { payment: { display_name: "direct" } };
  const { payment } = await grpcurl(shop.addresses.payment, \`\${SERVICE}/CreatePayment\`, body);
  t.regex(payment.paymentId, /^pay_/);
});

test.serial("Envoy routes payment: grpcurl list, gRPC and REST through it", async (t) => {
  const mesh = await launch(t, "mesh", { args: ["--no-seed"], replicas: 1 });
  const envoy = mesh.envoy as string;
  const tls = ["-cacert", \`\${CERTS}/ca.crt\`];
  const listed = await exec(tool("grpcurl"), [...tls, envoy, "list"]);
  t.true(listed.stdout.split("\\n").includes(SERVICE), listed.stdout);
  const body = { payment: { display_name: "through Envoy" } };
  const { payment } = await grpcurl(envoy, \`\${SERVICE}/CreatePayment\`, body, [], tls);
  const got = await grpcurl(envoy, \`\${SERVICE}/GetPayment\`, { payment_id: payment.paymentId }, [], tls);
  t.deepEqual(got.payment, payment);
  const rest = await edgeFetch(\`https://\${envoy}/payments/\${payment.paymentId}\`, {
    headers: { authorization: \`Bearer \${ADMIN_TOKEN}\` },
  });
  t.is(rest.status, 200);
  t.is(((await rest.json()) as { payment: { payment_id: string } }).payment.payment_id, payment.paymentId);
});
`;

test("npm run new-service -- payment scaffolds a service that every gate, launcher and Envoy take", async (t) => {
  t.timeout(600_000);
  const copy = await copyRepo();
  t.teardown(() => rm(copy, { recursive: true, force: true }));
  const before = await snapshot(copy);
  const run = async (command: string, args: string[], timeoutMs = 180_000) => {
    const result = await exec(command, args, { cwd: copy, timeoutMs });
    t.is(result.code, 0, `${command} ${args.join(" ")}\n${result.stdout}\n${result.stderr}`);
    return result;
  };

  // The scaffold, and generate (which it runs).
  await run("npm", ["run", "new-service", "--", "payment"]);

  // Zero edits anywhere else: new files are the proto and the folder (and generated code); the
  // registry gains exactly one line; every other hand-written file is as it was.
  const after = await filesOf(copy);
  const added = after.filter((file) => !before.has(file) && !GENERATED.some((g) => g.test(file)));
  t.deepEqual(added, [
    "proto/shop/payment/v1/payment.proto",
    "services/payment/handlers.test.ts",
    "services/payment/handlers.ts",
    "services/payment/migrations/0001_create_payments.ts",
    "services/payment/migrations/index.ts",
    "services/payment/service.ts",
    "services/payment/store.ts",
  ]);
  const changed = [...before.keys()].filter(
    (file) =>
      !GENERATED.some((g) => g.test(file)) &&
      readFileSync(path.join(copy, file), "utf8") !== before.get(file),
  );
  t.deepEqual(changed, [
    "services/handlers.postgres.test.ts",
    "services/handlers.sqlite3.test.ts",
    "services/registry.ts",
  ]);
  for (const variant of changed.slice(0, 2)) {
    const lines = readFileSync(path.join(copy, variant), "utf8").split("\n");
    const old = (before.get(variant) as string).split("\n");
    t.deepEqual(
      lines.filter((line) => !old.includes(line)),
      ['import "./payment/handlers.test.js";'],
      variant,
    );
  }
  const registryBefore = (before.get("services/registry.ts") as string).split("\n");
  const registryAfter = readFileSync(path.join(copy, "services/registry.ts"), "utf8").split("\n");
  t.deepEqual(
    registryAfter.filter((line) => !registryBefore.includes(line)),
    ['  { module: (await import("./payment/service.js")).paymentService, port: 50054 },'],
  );
  t.is(registryAfter.length, registryBefore.length + 1);
  const handWritten = added.filter((file) => file.startsWith("services/payment/"));
  let lines = 0;
  for (const file of handWritten) {
    lines += readFileSync(path.join(copy, file), "utf8").trimEnd().split("\n").length;
  }
  t.log(`services/payment: ${lines} lines in ${handWritten.length} files`);
  t.true(lines <= 160, `${lines} hand-written lines`);
  t.true((await readdir(path.join(copy, "gen/ts/shop/payment/v1"))).includes("payment.ts"));

  // The gates.
  await run("npm", ["run", "lint"]);
  await run("npm", ["run", "breaking"]);
  // The typecheck is the scaffold's own last step: it kept the service only because tsc passed.
  await run("npx", ["tsx", "deploy/generate.ts", "--check"]);

  // Its handler test, then the copy's own launchers and Envoy.
  const handlerTest = await run("npx", ["ava", "services/payment"]);
  t.regex(handlerTest.stdout + handlerTest.stderr, /3 tests passed/);
  const onPostgres = await run("npx", [
    ...["ava", "services/handlers.postgres.test.ts", "--match", "*Payment*"],
  ]);
  t.regex(onPostgres.stdout + onPostgres.stderr, /3 tests passed/);
  await writeFile(path.join(copy, "test/scaffold-launch.test.ts"), LAUNCH_CHECK);
  const launched = await run("npx", ["ava", "test/scaffold-launch.test.ts"], 300_000);
  t.regex(launched.stdout + launched.stderr, /2 tests passed/);
});

test("a name the code uses as a word of its own builds; one whose code would not compile leaves no trace", async (t) => {
  t.timeout(600_000);
  const copy = await copyRepo();
  t.teardown(() => rm(copy, { recursive: true, force: true }));
  const scaffold = (name: string) =>
    exec("npm", ["run", "--silent", "new-service", "--", name], { cwd: copy, timeoutMs: 300_000 });

  // "check" is also the validator the handlers import, which the service's field once hid, and
  // "client" what its test once called its client.
  for (const name of ["check", "client"]) {
    const scaffolded = await scaffold(name);
    t.is(scaffolded.code, 0, scaffolded.stdout + scaffolded.stderr);
  }
  const tested = await exec("npx", ["ava", "services/check", "services/client"], {
    cwd: copy,
    timeoutMs: 180_000,
  });
  t.regex(tested.stdout + tested.stderr, /6 tests passed/, tested.stdout + tested.stderr);

  // "define" makes the service's module `defineService`, the kit's function of that name.
  const before = await snapshot(copy);
  const define = await scaffold("define");
  t.is(define.code, 1, define.stdout);
  t.regex(define.stderr, /new-service: "define" did not build .*nothing was kept/);
  const after = await snapshot(copy);
  t.deepEqual([...after.keys()], [...before.keys()]);
  t.deepEqual(
    [...after].filter(([file, text]) => before.get(file) !== text).map(([file]) => file),
    [],
  );
});

// Each name is used by the deployment or the tests already: a service of that name would clash.
const RESERVED = {
  users: /names a client of the test fleets/,
  inventory: /names a client of the test fleets/,
  envoy: /is the front door/,
  seed: /demo seeder's compose service/,
  edge: /Envoy's mTLS identity/,
  cli: /operators' tools' mTLS identity/,
  prometheus: /SHOP_PROMETHEUS_PORT/,
  health: /SHOP_HEALTH_PORT/,
  metrics: /SHOP_METRICS_PORT/,
  class: /reserved word in JavaScript/,
  await: /reserved word in JavaScript/,
  google: /package shop\.google\.v1/,
  namespace: /overlays\/\*\/namespace\.yaml/,
  storage: /overlays\/\*\/storage\.yaml/,
  autoscaling: /overlays\/\*\/autoscaling\.yaml/,
  kustomization: /overlays\/\*\/kustomization\.yaml/,
};

test("every name the deployment or the tests use is refused", (t) => {
  for (const [name, why] of Object.entries(RESERVED)) {
    const refusal = nameRefusal(name, registry.names) ?? "";
    t.regex(refusal, new RegExp(`^"${name}" `), name);
    t.regex(refusal, why, name);
    t.regex(refusal, /choose another name/, name);
  }
  // Not a word the scaffold can use: ts-proto would name its rpcs otherwise.
  t.regex(nameRefusal("oauth2", registry.names) ?? "", /^usage: .*digits inside, not last/);
  t.regex(nameRefusal("user", registry.names) ?? "", /^"user" is already registered/);
  t.is(nameRefusal("payment", registry.names), undefined);
});

test("a new service's collection takes its name's English plural", (t) => {
  const plurals = ["payments", "addresses", "taxes", "batches", "categories", "keys"];
  t.deepEqual(["payment", "address", "tax", "batch", "category", "key"].map(pluralOf), plurals);
});

// The command itself, for a reserved name and a malformed one: each refusal is its one line.
for (const [name, refusal] of [
  ["users", /^new-service: "users" names a client of the test fleets.*choose another name/],
  ["oauth2", /^new-service: usage: .*digits inside, not last/],
] as const) {
  test(`npm run new-service -- ${name} exits 1 before writing anything`, async (t) => {
    const registryBefore = readFileSync(path.join(repoRoot, "services", "registry.ts"), "utf8");
    const run = await exec(process.execPath, ["--import", "tsx", "scripts/new-service.ts", name]);
    t.is(run.code, 1, `${run.stdout}${run.stderr}`);
    t.regex(run.stderr, refusal);
    t.false(existsSync(path.join(repoRoot, "proto", "shop", name)), "no proto written");
    t.false(existsSync(path.join(repoRoot, "services", name)), "no service folder written");
    t.is(readFileSync(path.join(repoRoot, "services", "registry.ts"), "utf8"), registryBefore);
  });
}
