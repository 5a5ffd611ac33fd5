// The contract gates: lint, generated-code drift, the breaking-change gate and the typecheck.
import { cp, mkdtemp, readdir, readFile, rm, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { Order, OrderState } from "../gen/ts/shop/order/v1/order.js";
import { repoRoot } from "../scripts/lib/launcher.js";
import { exec } from "./helpers/exec.js";

const buf = path.join(repoRoot, "node_modules/.bin/buf");
const userProto = "proto/shop/user/v1/user.proto";

test("buf lint is clean", async (t) => {
  const result = await exec(buf, ["lint"]);
  t.is(result.stdout + result.stderr, "");
  t.is(result.code, 0);
});

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { recursive: true, withFileTypes: true });
  return entries
    .filter((entry) => entry.isFile() && !entry.parentPath.includes("__pycache__"))
    .map((entry) => path.relative(dir, path.join(entry.parentPath, entry.name)))
    .sort();
}

test("regenerating from proto/ leaves gen/ and the API reference (docs/api) unchanged", async (t) => {
  const out = await mkdtemp(path.join(tmpdir(), "shopmesh-gen-"));
  t.teardown(() => rm(out, { recursive: true, force: true }));
  const result = await exec("bash", ["scripts/generate.sh", out], { timeoutMs: 120_000 });
  t.is(result.code, 0, result.stderr);

  for (const dir of ["gen", "docs/api"]) {
    const committed = path.join(repoRoot, dir);
    const fresh = path.join(out, dir);
    // What git would see of the repo's copy: not what .gitignore leaves out, such as the
    // egg-info `pip install -e gen/python` writes there.
    const listed = await exec("git", ["ls-files", "-co", "--exclude-standard", "--", dir]);
    const files = listed.stdout
      .split("\n")
      .filter(Boolean)
      .map((file) => path.relative(dir, file))
      .sort();
    t.true(files.length > 0, dir);
    t.deepEqual(await listFiles(fresh), files, `the set of generated files in ${dir} differs`);
    for (const file of files) {
      const [a, b] = await Promise.all([
        readFile(path.join(committed, file)),
        readFile(path.join(fresh, file)),
      ]);
      t.true(a.equals(b), `${dir}/${file} drifted from proto/: run npm run generate`);
    }
  }
});

test("the current contract passes the breaking gate", async (t) => {
  const result = await exec("bash", ["scripts/breaking.sh"]);
  t.is(result.code, 0, result.stdout + result.stderr);
});

test("the breaking gate against a git ref passes the current contract, and names a ref it lacks", async (t) => {
  t.is((await exec("bash", ["scripts/breaking.sh", "--against-ref", "HEAD"])).code, 0);
  const missing = await exec("bash", ["scripts/breaking.sh", "--against-ref", "no-such-ref"]);
  t.is(missing.code, 2);
  t.regex(missing.stderr, /no commit named "no-such-ref" in this checkout/);
});

/** Copies the workspace to a temp dir, applies an edit to one proto and runs the gate on it. */
async function gateAfterEdit(file: string, edit: (text: string) => string) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-breaking-"));
  try {
    await cp(path.join(repoRoot, "proto"), path.join(dir, "proto"), { recursive: true });
    await cp(path.join(repoRoot, "buf.yaml"), path.join(dir, "buf.yaml"));
    await symlink(path.join(repoRoot, "node_modules"), path.join(dir, "node_modules"));
    const target = path.join(dir, file);
    const before = await readFile(target, "utf8");
    const after = edit(before);
    if (after === before) throw new Error(`the edit of ${file} changed nothing`);
    await writeFile(target, after);
    return await exec("bash", ["scripts/breaking.sh", dir]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

const rejected: Record<string, (text: string) => string> = {
  "removing a field": (text) => text.replace(/^ {2}string display_name = 3.*\n/m, ""),
  "changing a field's type": (text) =>
    text.replace("string display_name = 3", "int64 display_name = 3"),
  "removing an rpc": (text) => text.replace(/ {2}rpc DeleteUser\([\s\S]*?\n {2}\}\n/, ""),
  "renaming a package": (text) =>
    text.replace("package shop.user.v1;", "package shop.customer.v1;"),
  // Clients generated from the old contract would still retry GetUser.
  "weakening an rpc's idempotency level": (text) =>
    text.replace(
      '{get: "/users/{user_id}"};\n    option idempotency_level = NO_SIDE_EFFECTS;',
      '{get: "/users/{user_id}"};\n    option idempotency_level = IDEMPOTENCY_UNKNOWN;',
    ),
};

for (const [name, edit] of Object.entries(rejected)) {
  test(`the breaking gate rejects ${name}`, async (t) => {
    const result = await gateAfterEdit(userProto, edit);
    t.not(result.code, 0, "the gate accepted a breaking change");
    t.regex(result.stdout + result.stderr, /user\.proto/);
  });
}

// How the reservation rpcs left ProductService for the internal InventoryService: the gate refuses
// moving an rpc between services until a release takes the new contract as its baseline.
test("the breaking gate rejects moving an rpc to another service", async (t) => {
  const result = await gateAfterEdit("proto/shop/product/v1/inventory.proto", (text) =>
    text
      .replace(
        "service InventoryService {",
        "service InventoryService {\n  // Moved.\n  rpc Probe(CommitReservationRequest) returns (CommitReservationResponse) {\n    option idempotency_level = IDEMPOTENT;\n  }\n",
      )
      .replace(
        / {2}\/\/ Makes a held reservation permanent[\s\S]*?rpc CommitReservation[\s\S]*?\n {2}\}\n/,
        "",
      ),
  );
  t.not(result.code, 0, "the gate accepted moving an rpc");
  t.regex(
    result.stdout + result.stderr,
    /RPC "CommitReservation" on service "InventoryService" was deleted/,
  );
});

// buf's rules skip custom options: scripts/contract-breaks.ts checks the REST mapping and
// field_behavior (and which way an idempotency level moved), and names the rpc.
const productProto = "proto/shop/product/v1/product.proto";

const rejectedRest: Record<string, [RegExp, (text: string) => string]> = {
  "changing an rpc's REST path": [
    /ProductService\.GetProduct: .*GET \/products\/\{product_id\}.*GET \/v2\/items/,
    (text) => text.replace('{get: "/products/{product_id}"}', '{get: "/v2/items/{product_id}"}'),
  ],
  "changing an rpc's REST body": [
    /ProductService\.CreateProduct: .*body "product".*body "\*"/,
    (text) =>
      text.replace(
        'post: "/products"\n      body: "product"',
        'post: "/products"\n      body: "*"',
      ),
  ],
  "making an optional request field REQUIRED": [
    /ProductService\.ListProducts: .*in_stock_only/,
    (text) =>
      text.replace(
        "bool in_stock_only = 3;",
        "bool in_stock_only = 3 [(google.api.field_behavior) = REQUIRED];",
      ),
  ],
  "setting a request field from the URL path": [
    /ProductService\.ListProducts: .*page_token/,
    (text) =>
      text.replace(
        '{get: "/products"}',
        '{\n      get: "/products"\n      additional_bindings {get: "/products/pages/{page_token}"}\n    }',
      ),
  ],
};

for (const [name, [named, edit]] of Object.entries(rejectedRest)) {
  test(`the breaking gate rejects ${name}`, async (t) => {
    const result = await gateAfterEdit(productProto, edit);
    t.not(result.code, 0, "the gate accepted a breaking change");
    t.regex(result.stdout + result.stderr, named);
  });
}

const acceptedRest: Record<string, (text: string) => string> = {
  "adding a REST binding": (text) =>
    text.replace(
      '{get: "/products/{product_id}"}',
      '{\n      get: "/products/{product_id}"\n      additional_bindings {get: "/catalogue/{product_id}"}\n    }',
    ),
  "adding an rpc with a REST rule": (text) =>
    text
      .replace(
        "service ProductService {",
        'service ProductService {\n  // Archives.\n  rpc ArchiveProduct(ArchiveProductRequest) returns (ArchiveProductResponse) {\n    option (google.api.http) = {\n      post: "/products/{product_id}:archive"\n      body: "*"\n    };\n    option idempotency_level = IDEMPOTENT;\n  }\n',
      )
      .concat(
        "\n// Archive request.\nmessage ArchiveProductRequest {\n  // Id.\n  string product_id = 1 [(google.api.field_behavior) = REQUIRED];\n}\n// Archive response.\nmessage ArchiveProductResponse {}\n",
      ),
};

for (const [name, edit] of Object.entries(acceptedRest)) {
  test(`the breaking gate accepts ${name}`, async (t) => {
    const result = await gateAfterEdit(productProto, edit);
    t.is(result.code, 0, result.stdout + result.stderr);
  });
}

const accepted: Record<string, (text: string) => string> = {
  "adding a field": (text) =>
    text.replace(
      "  google.protobuf.Timestamp update_time = 5",
      "  // Phone number.\n  string phone = 6;\n\n  google.protobuf.Timestamp update_time = 5",
    ),
  "adding an rpc": (text) =>
    text
      .replace(
        "service UserService {",
        "service UserService {\n  // Pings.\n  rpc PingUser(PingUserRequest) returns (PingUserResponse) {\n    option idempotency_level = NO_SIDE_EFFECTS;\n  }\n",
      )
      .concat(
        "\n// Ping request.\nmessage PingUserRequest {}\n// Ping response.\nmessage PingUserResponse {}\n",
      ),
  // Clients of the released contract retry it no more than before.
  "strengthening an rpc's idempotency level": (text) =>
    text.replace(
      '{delete: "/users/{user_id}"};\n    option idempotency_level = IDEMPOTENCY_UNKNOWN;',
      '{delete: "/users/{user_id}"};\n    option idempotency_level = IDEMPOTENT;',
    ),
};

for (const [name, edit] of Object.entries(accepted)) {
  test(`the breaking gate accepts ${name}`, async (t) => {
    const result = await gateAfterEdit(userProto, edit);
    t.is(result.code, 0, result.stdout + result.stderr);
  });
}

test("the project and the generated code typecheck", async (t) => {
  const result = await exec(path.join(repoRoot, "node_modules/.bin/tsc"), ["--noEmit"], {
    timeoutMs: 120_000,
  });
  t.is(result.code, 0, result.stdout + result.stderr);
});

test("the browser storefront and the Connect stubs typecheck (DOM, gen/es)", async (t) => {
  const tsc = path.join(repoRoot, "node_modules/.bin/tsc");
  const result = await exec(tsc, ["--noEmit", "-p", "examples/web"], { timeoutMs: 120_000 });
  t.is(result.code, 0, result.stdout + result.stderr);
});

test("a TypeScript client reads an enum value from a newer contract without throwing", (t) => {
  // A newer server may add an OrderState; proto3 enums are open, so the old client must keep it.
  const wire = Order.encode(
    Order.fromPartial({ orderId: "o-1", state: 99 as OrderState }),
  ).finish();
  const order = Order.decode(wire);
  t.is(order.state as number, 99);
  t.like(Order.toJSON(order), { state: "UNRECOGNIZED" });
  t.is(Order.fromJSON({ state: "ORDER_STATE_SHIPPED" }).state, OrderState.UNRECOGNIZED);
});
