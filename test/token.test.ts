// npm run token signs with a deployment's key when given one: a token the production profile's
// JWKS and issuer accept.
import { readFileSync } from "node:fs";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { createLocalJWKSet, decodeProtectedHeader, jwtVerify } from "jose";
import { DEV_AUDIENCE, PRODUCTION_ISSUER } from "../kit/security/security.js";
import { makeCredentials } from "../scripts/lib/credentials.js";
import { exec } from "./helpers/exec.js";

test("npm run token -- --key FILE --issuer URL signs a token the deployment's JWKS verifies", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-token-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await makeCredentials(dir, { keyIdPrefix: "shopmesh-", identities: [] });
  const key = path.join(dir, "jwt.key");
  const args = [
    "--user",
    "usr_ops",
    "--role",
    "admin",
    "--key",
    key,
    "--issuer",
    PRODUCTION_ISSUER,
  ];
  const run = await exec(process.execPath, ["--import", "tsx", "scripts/token.ts", ...args]);
  t.is(run.code, 0, run.stderr);
  const token = run.stdout.trim();

  const jwks = JSON.parse(readFileSync(path.join(dir, "jwks.json"), "utf8"));
  const { payload } = await jwtVerify(token, createLocalJWKSet(jwks), {
    issuer: PRODUCTION_ISSUER,
    audience: DEV_AUDIENCE,
  });
  t.is(payload.sub, "usr_ops");
  t.deepEqual(payload.roles, ["admin"]);
  t.is(decodeProtectedHeader(token).kid, jwks.keys[0].kid);
});

test("npm run token -- --key FILE takes its issuer from SHOP_JWT_ISSUER, and needs one", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-token-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  await makeCredentials(dir, { keyIdPrefix: "shopmesh-", identities: [] });
  const args = ["--import", "tsx", "scripts/token.ts", "--user", "usr_ops"];
  const key = ["--key", path.join(dir, "jwt.key")];
  const unnamed = await exec(process.execPath, [...args, ...key], {
    env: { SHOP_JWT_ISSUER: "" },
  });
  t.is(unnamed.code, 1);
  t.regex(unnamed.stderr, /--key signs for a deployment: give the issuer its services check/);

  const named = await exec(process.execPath, [...args, ...key], {
    env: { SHOP_JWT_ISSUER: PRODUCTION_ISSUER },
  });
  t.is(named.code, 0, named.stderr);
  const jwks = JSON.parse(readFileSync(path.join(dir, "jwks.json"), "utf8"));
  const { payload } = await jwtVerify(named.stdout.trim(), createLocalJWKSet(jwks), {
    issuer: PRODUCTION_ISSUER,
    audience: DEV_AUDIENCE,
  });
  t.is(payload.sub, "usr_ops");
});

test("npm run token refuses --jwks without --key", async (t) => {
  const run = await exec(process.execPath, [
    ...["--import", "tsx", "scripts/token.ts"],
    ...["--user", "usr_ops", "--jwks", "/nowhere/jwks.json"],
  ]);
  t.is(run.code, 1);
  t.regex(run.stderr, /--jwks goes with --key/);
});

test("npm run token names the key that signed, in a JWKS of two keys as a rollover has it, and refuses a key the JWKS lacks", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-token-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const [old, next] = [path.join(dir, "old"), path.join(dir, "new")];
  await makeCredentials(old, { keyIdPrefix: "shopmesh-", identities: [] });
  await makeCredentials(next, { keyIdPrefix: "shopmesh-", identities: [] });
  const keysOf = (folder: string) =>
    JSON.parse(readFileSync(path.join(folder, "jwks.json"), "utf8")).keys;
  // The overlap: the old key first, the new one beside it.
  const both = path.join(dir, "both.json");
  await writeFile(both, JSON.stringify({ keys: [...keysOf(old), ...keysOf(next)] }));
  const token = (key: string, jwks: string) =>
    exec(process.execPath, [
      ...["--import", "tsx", "scripts/token.ts", "--user", "usr_ops"],
      ...["--key", path.join(key, "jwt.key"), "--jwks", jwks, "--issuer", PRODUCTION_ISSUER],
    ]);

  const signed = await token(next, both);
  t.is(signed.code, 0, signed.stderr);
  t.is(decodeProtectedHeader(signed.stdout.trim()).kid, keysOf(next)[0].kid);
  const { payload } = await jwtVerify(
    signed.stdout.trim(),
    createLocalJWKSet({ keys: [...keysOf(old), ...keysOf(next)] }),
    { issuer: PRODUCTION_ISSUER, audience: DEV_AUDIENCE },
  );
  t.is(payload.sub, "usr_ops");

  const unlisted = await token(next, path.join(old, "jwks.json"));
  t.is(unlisted.code, 1);
  t.regex(unlisted.stderr, /the public key of .*new\/jwt\.key is not in .*old\/jwks\.json/);
});
