// npm run new-service -- <name>: scaffolds a service. Writes proto/shop/<name>/v1/<name>.proto (a
// commented resource with Get, List and Create, each with its idempotency level), services/<name>/
// (handlers, store, migration, module, handler test), its line in services/registry.ts and its
// handler test's import in the storage variants (services/handlers.{postgres,sqlite3}.test.ts),
// then regenerates everything derived from proto/ and the registry (npm run generate) and
// typechecks the result; a step that fails undoes them all. Nothing else needs an edit:
// launchers, Envoy, compose, the bench and the test fleets follow the registry.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { registry } from "../services/registry.js";
import { repoRoot } from "./lib/launcher.js";
import { nameRefusal, pluralOf } from "./lib/reserved-names.js";

const name = process.argv[2] ?? "";
const fail = (message: string): never => {
  console.error(`new-service: ${message}`);
  process.exit(1);
};
const refusal = nameRefusal(name, registry.names);
if (refusal) fail(refusal);
const Name = name[0]?.toUpperCase() + name.slice(1);
const names = pluralOf(name);
const Names = names[0]?.toUpperCase() + names.slice(1);
const pkg = `shop.${name}.v1`;
const prefix = name.slice(0, 3);
const protoFile = path.join(repoRoot, "proto", "shop", name, "v1", `${name}.proto`);
const folder = path.join(repoRoot, "services", name);
if (existsSync(protoFile) || existsSync(folder)) fail(`${name} has a proto or a folder already`);

// The next free port whose replicas (+10 each, npm run mesh) meet no other service's.
const ports = registry.services.map((service) => service.port);
let port = Math.max(...ports) + 1;
while (ports.some((taken) => (port - taken) % 10 === 0)) port++;

const proto = `syntax = "proto3";

package ${pkg};

import "google/api/annotations.proto";
import "google/api/field_behavior.proto";
import "google/protobuf/timestamp.proto";

// Manages ${names}. Every ${name} is identified by an opaque, server-assigned
// \`${name}_id\`.
//
// Errors carry \`google.rpc.Status\` details: \`BadRequest\` field violations
// (the first 20; a field may have more than one), and one \`ErrorInfo\` whose
// domain is "${pkg}" and whose reason is an UPPER_SNAKE code such as
// \`${name.toUpperCase()}_NOT_FOUND\`.
//
// Authentication: every rpc needs a JWT bearer token in the \`authorization\`
// metadata (\`Bearer <token>\`): UNAUTHENTICATED (reason \`TOKEN_MISSING\`,
// \`TOKEN_EXPIRED\` or \`TOKEN_INVALID\`) otherwise, and nothing changes.
//
// Lengths in this file count Unicode code points ("characters"), and every
// string must be valid UTF-8 without U+0000 (INVALID_ARGUMENT). Every rpc
// answers a request message that does not decode with INVALID_ARGUMENT
// (reason \`MALFORMED_REQUEST\`). Every rpc may also answer
// RESOURCE_EXHAUSTED: reason \`REQUEST_TOO_LARGE\` for a request over 4 MB,
// \`DATABASE_FULL\` when the service's disk is full (nothing was written); and
// UNIMPLEMENTED (reason \`UNSUPPORTED_ENCODING\`) for a request compressed in
// an encoding the service lacks.
//
// UNAVAILABLE means the call changed nothing, so it may be resent: reason
// \`DATABASE_BUSY\` or \`DATABASE_UNAVAILABLE\` when the service's database was
// busy or out of reach, \`SHUTTING_DOWN\` when the service was stopping. A write
// whose connection to the database was lost before the database confirmed
// it may have been kept: it answers ABORTED (reason \`OUTCOME_UNKNOWN\`), and
// the caller reads the record back before repeating it.
service ${Name}Service {
  // Creates a ${name}.
  //
  // Returns INVALID_ARGUMENT when a field breaks its constraints.
  rpc Create${Name}(Create${Name}Request) returns (Create${Name}Response) {
    option (google.api.http) = {
      post: "/${names}"
      body: "${name}"
    };
    option idempotency_level = IDEMPOTENCY_UNKNOWN;
  }

  // Returns one ${name}.
  //
  // Returns INVALID_ARGUMENT when \`${name}_id\` is empty or too long, and
  // NOT_FOUND (reason \`${name.toUpperCase()}_NOT_FOUND\`) when no ${name} has that id.
  rpc Get${Name}(Get${Name}Request) returns (Get${Name}Response) {
    option (google.api.http) = {get: "/${names}/{${name}_id}"};
    option idempotency_level = NO_SIDE_EFFECTS;
  }

  // Lists ${names}, oldest first, one page at a time.
  //
  // Returns INVALID_ARGUMENT (reason \`INVALID_PAGE_TOKEN\`) when \`page_token\`
  // was not issued by a previous call, or when \`page_size\` is negative.
  rpc List${Names}(List${Names}Request) returns (List${Names}Response) {
    option (google.api.http) = {get: "/${names}"};
    option idempotency_level = NO_SIDE_EFFECTS;
  }
}

// A ${name}.
message ${Name} {
  // Opaque identifier assigned by the server at creation. Output only.
  string ${name}_id = 1 [(google.api.field_behavior) = OUTPUT_ONLY];

  // Name shown to people. Required; 1 to 100 characters. Not blank (only
  // spaces or invisible characters), and no control characters such as a
  // line break.
  string display_name = 2 [(google.api.field_behavior) = REQUIRED];

  // When the ${name} was created. Output only.
  google.protobuf.Timestamp create_time = 3 [(google.api.field_behavior) = OUTPUT_ONLY];
}

// Request for ${Name}Service.Create${Name}.
message Create${Name}Request {
  // The ${name} to create. Required. \`${name}_id\` and \`create_time\` are ignored.
  ${Name} ${name} = 1 [(google.api.field_behavior) = REQUIRED];
}

// Response for ${Name}Service.Create${Name}.
message Create${Name}Response {
  // The created ${name}, with its assigned \`${name}_id\`.
  ${Name} ${name} = 1;
}

// Request for ${Name}Service.Get${Name}.
message Get${Name}Request {
  // Id of the ${name} to return. Required; at most 64 characters.
  string ${name}_id = 1 [(google.api.field_behavior) = REQUIRED];
}

// Response for ${Name}Service.Get${Name}.
message Get${Name}Response {
  // The requested ${name}.
  ${Name} ${name} = 1;
}

// Request for ${Name}Service.List${Names}.
message List${Names}Request {
  // Maximum number of ${names} to return. 0 means the default of 50; values
  // above 1000 are treated as 1000. Must not be negative.
  int32 page_size = 1;

  // Token from a previous response's \`next_page_token\`; empty for the first
  // page. Opaque: clients must not build or change it.
  string page_token = 2;
}

// Response for ${Name}Service.List${Names}.
message List${Names}Response {
  // The ${names} of this page, oldest first.
  repeated ${Name} ${names} = 1;

  // Token for the next page; empty when this is the last page.
  string next_page_token = 2;
}
`;

const gen = `../../gen/ts/shop/${name}/v1/${name}.js`;
const files: Record<string, string> = {
  "handlers.ts": `import type { ${Name}ServiceService } from "${gen}";
import { newId } from "../../kit/ids.js";
import { requestedPage } from "../../kit/page-token.js";
import type { Handlers } from "../../kit/service.js";
import { check } from "../../kit/validate.js";
import type { ${Name}Store } from "./store.js";

/** ${Name}Service: each rpc validates its request, then asks the store. */
export function ${name}Handlers(store: ${Name}Store): Handlers<typeof ${Name}ServiceService> {
  return {
    async create${Name}(request) {
      const v = check();
      const given = request.${name};
      if (!given) v.add("${name}", "is required");
      else v.name("${name}.display_name", given.displayName, 100);
      v.throwIfAny();
      return { ${name}: await store.insert(newId("${prefix}"), given?.displayName ?? "") };
    },

    async get${Name}(request) {
      check().id("${name}_id", request.${name}Id).throwIfAny();
      return { ${name}: await store.get(request.${name}Id) };
    },

    async list${Names}(request, ctx) {
      const page = requestedPage(check(), ctx, request);
      const { ${names}, nextSeq } = await store.list(page.limit, page.after, page.bytes);
      return { ${names}, nextPageToken: page.tokenAfter(nextSeq) };
    },
  };
}
`,
  "store.ts": `import type { ${Name} } from "${gen}";
import { type Knex, pageBySeq, readTime, textBytes } from "../../kit/db/index.js";
import { errors } from "../../kit/errors.js";

interface ${Name}Row {
  seq: number;
  ${name}_id: string;
  display_name: string;
  /** Milliseconds since the epoch: a number from SQLite, a string from PostgreSQL. */
  create_time: number | string;
}

const to${Name} = (row: ${Name}Row): ${Name} => ({
  ${name}Id: row.${name}_id,
  displayName: row.display_name,
  createTime: new Date(readTime(row.create_time)),
});

/** The ${names} table: the only code that touches it. */
export class ${Name}Store {
  constructor(private readonly env: { db: Knex; reads: Knex }) {}

  async insert(${name}Id: string, displayName: string): Promise<${Name}> {
    const row = { ${name}_id: ${name}Id, display_name: displayName, create_time: Date.now() };
    await this.env.db("${names}").insert(row);
    return to${Name}(row as ${Name}Row);
  }

  async get(${name}Id: string): Promise<${Name}> {
    const [row] = await this.env.reads<${Name}Row>("${names}").where({ ${name}_id: ${name}Id });
    if (!row) throw errors.notFound("${name.toUpperCase()}_NOT_FOUND", \`${name} \${${name}Id} does not exist\`);
    return to${Name}(row);
  }

  /** Up to \`limit\` ${names} after \`afterSeq\`, oldest first, and the seq to continue from. */
  async list(limit: number, afterSeq?: number, bytes?: number) {
    const { items, nextSeq } = await pageBySeq(this.env.reads<${Name}Row>("${names}"), limit, {
      from: afterSeq,
      items: (rows: ${Name}Row[]) => rows.map(to${Name}),
      sizeOf: (${name}) => textBytes(${name}.${name}Id, ${name}.displayName) + 30,
      bytes,
    });
    return { ${names}: items, nextSeq };
  }
}
`,
  [`migrations/0001_create_${names}.ts`]: `import type { Migration } from "../../../kit/db/index.js";

export const create${Names}: Migration = {
  name: "0001_create_${names}",
  async up(db) {
    await db.schema.createTable("${names}", (table) => {
      // seq orders pages; ${name}_id is the public id.
      table.increments("seq");
      table.string("${name}_id", 64).notNullable().unique();
      table.string("display_name", 100).notNullable();
      table.bigInteger("create_time").notNullable();
    });
  },
  async down(db) {
    await db.schema.dropTable("${names}");
  },
};
`,
  "migrations/index.ts": `import type { Migration } from "../../../kit/db/index.js";
import { create${Names} } from "./0001_create_${names}.js";

/** In order; never edit one that has shipped, add the next. */
export const migrations: Migration[] = [create${Names}];
`,
  "service.ts": `import { ${Name}ServiceService } from "${gen}";
import { signedIn } from "../../kit/security/auth.js";
import { defineService, everyRpc } from "../../kit/service.js";
import { ${name}Handlers } from "./handlers.js";
import { migrations } from "./migrations/index.js";
import { ${Name}Store } from "./store.js";

export const ${name}Service = defineService({
  name: "${name}",
  serves: { ${Name}Service: ${Name}ServiceService },
  dependencies: {},
  migrations,
  access: { ${Name}Service: everyRpc(${Name}ServiceService, signedIn) },
  implement: (env) => ({ handlers: { ${Name}Service: ${name}Handlers(new ${Name}Store(env)) } }),
});
`,
  "handlers.test.ts": `// ${Name}Service served on port 0 with an in-memory database, called through its generated client.
import test, { type ExecutionContext } from "ava";
import { ${Name}ServiceService } from "${gen}";
import { Code } from "../../kit/errors.js";
import { signedInClient } from "../../test/helpers/credentials.js";
import { start } from "../../test/helpers/fleet.js";
import { expectInvalid, expectStatus } from "../../test/helpers/status.js";
import { ${name}Service } from "./service.js";

async function serve${Name}(t: ExecutionContext) {
  const service = await start(t, ${name}Service);
  const ${names} = signedInClient(${Name}ServiceService, service.server.address);
  t.teardown(() => ${names}.close());
  return ${names};
}

test("Create${Name} assigns an id, and Get${Name} returns what it stored", async (t) => {
  const ${names} = await serve${Name}(t);
  const { ${name} } = await ${names}.create${Name}({ ${name}: { displayName: "First" } });
  t.regex(${name}?.${name}Id ?? "", /^${prefix}_/);
  t.deepEqual((await ${names}.get${Name}({ ${name}Id: ${name}?.${name}Id })).${name}, ${name});
});

test("Create${Name} refuses no ${name} or a blank display_name, and Get${Name} an unknown id", async (t) => {
  const ${names} = await serve${Name}(t);
  await expectInvalid(t, ${names}.create${Name}({}), ["${name}"]);
  await expectInvalid(t, ${names}.create${Name}({ ${name}: { displayName: " " } }), [
    "${name}.display_name",
  ]);
  const unknown = ${names}.get${Name}({ ${name}Id: "nope" });
  await expectStatus(t, unknown, Code.NOT_FOUND, "${name.toUpperCase()}_NOT_FOUND");
});

test("List${Names} pages through every ${name}, oldest first", async (t) => {
  const ${names} = await serve${Name}(t);
  const given = ["a", "b", "c"];
  for (const displayName of given) await ${names}.create${Name}({ ${name}: { displayName } });
  const first = await ${names}.list${Names}({ pageSize: 2 });
  const rest = await ${names}.list${Names}({ pageSize: 2, pageToken: first.nextPageToken });
  t.deepEqual([...first.${names}, ...rest.${names}].map((one) => one.displayName), given);
  t.is(rest.nextPageToken, "");
});
`,
};

// Everything the scaffold writes, so that a step that fails leaves the repo as it was.
const createdFolders = [path.join(repoRoot, "proto", "shop", name), folder];
const originals = new Map<string, string>();
const edit = (file: string, change: (text: string) => string) => {
  const text = readFileSync(file, "utf8");
  if (!originals.has(file)) originals.set(file, text);
  writeFileSync(file, change(text));
};
const run = (command: string, args: string[]) =>
  execFileSync(command, args, { cwd: repoRoot, stdio: "inherit" });

try {
  mkdirSync(path.dirname(protoFile), { recursive: true });
  writeFileSync(protoFile, proto);
  for (const [file, text] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(folder, file)), { recursive: true });
    writeFileSync(path.join(folder, file), text);
  }
  const line = `  { module: (await import("./${name}/service.js")).${name}Service, port: ${port} },\n`;
  edit(path.join(repoRoot, "services", "registry.ts"), (source) => {
    const end = source.indexOf("]);");
    if (end < 0) throw new Error("services/registry.ts has no `]);` to add the line before");
    return source.slice(0, end) + line + source.slice(end);
  });
  // Its handler test runs again on every other storage: one import in each variant file.
  for (const variant of ["handlers.postgres.test.ts", "handlers.sqlite3.test.ts"]) {
    edit(path.join(repoRoot, "services", variant), (text) => {
      return `${text.trimEnd()}\nimport "./${name}/handlers.test.js";\n`;
    });
  }
  run("npx", ["biome", "format", "--write", `services/${name}`]);
  run("npm", ["run", "--silent", "generate"]);
  // The name becomes identifiers in the generated and the scaffolded code, which a word such as
  // a protobuf scope or a type the stubs import can break: only a service that compiles is kept.
  run("npx", ["tsc", "--noEmit"]);
} catch (error) {
  for (const created of createdFolders) rmSync(created, { recursive: true, force: true });
  for (const [file, text] of originals) writeFileSync(file, text);
  run("npm", ["run", "--silent", "generate"]);
  fail(
    `"${name}" did not build (${(error as Error).message.split("\n")[0]}); nothing was kept; choose another name`,
  );
}
console.log(`
new-service: ${name} on port ${port}
  proto/shop/${name}/v1/${name}.proto
  services/${name}/ (handlers.ts, store.ts, migrations/, service.ts, handlers.test.ts)
  services/registry.ts: one line; services/handlers.{postgres,sqlite3}.test.ts: its handler test
Next: npm run lint && npx ava services/${name} && npm start
  (npm start issues its certificate; for a deployment: npm run certs -- --production --out deploy/secrets)`);
