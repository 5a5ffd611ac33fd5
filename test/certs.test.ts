// npm run certs on a folder that holds a set already: it issues the missing identities'
// certificates from the CA it finds (a service added after the set was made) and keeps the rest.
// A production set's files are readable by the uids compose's containers run as.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { IDENTITIES } from "../scripts/lib/credentials.js";
import { exec } from "./helpers/exec.js";

const certs = (args: string[]) =>
  exec(process.execPath, ["--import", "tsx", "scripts/certs.ts", ...args], { timeoutMs: 90_000 });

/** Every file of a set, by name, as it is now. */
const snapshot = (dir: string, names: readonly string[]) =>
  Object.fromEntries(names.map((name) => [name, readFileSync(path.join(dir, name), "utf8")]));

for (const production of [false, true]) {
  test(`npm run certs${production ? " -- --production" : ""} re-issues only a missing identity, from the same CA`, async (t) => {
    t.timeout(180_000);
    const parent = await mkdtemp(path.join(tmpdir(), "shopmesh-certs-"));
    t.teardown(() => rm(parent, { recursive: true, force: true }));
    const out = path.join(parent, "secrets");
    const args = ["--out", out, ...(production ? ["--production"] : [])];
    const first = await certs(args);
    t.is(first.code, 0, first.stderr);

    const [gone, ...kept] = IDENTITIES;
    const keptFiles = [
      ...["ca.crt", "ca.key", "jwt.key", "jwks.json"],
      ...(production ? ["page-token.secret"] : []),
      ...kept.flatMap((name) => [`${name}.crt`, `${name}.key`]),
    ];
    const before = snapshot(out, keptFiles);
    rmSync(path.join(out, `${gone}.crt`));
    rmSync(path.join(out, `${gone}.key`));

    const second = await certs(args);
    t.is(second.code, 0, second.stderr);
    t.regex(second.stdout, new RegExp(`issued ${gone} from the CA`));
    t.deepEqual(snapshot(out, keptFiles), before, "the CA, the other identities and the JWT key");
    const key = createPrivateKey(readFileSync(path.join(out, `${gone}.key`)));
    const ca = new X509Certificate(readFileSync(path.join(out, "ca.crt")));
    const issued = new X509Certificate(readFileSync(path.join(out, `${gone}.crt`)));
    t.true(issued.checkIssued(ca) && issued.verify(ca.publicKey), "signed by the set's CA");
    t.true(issued.checkPrivateKey(key), "its key");
    t.regex(issued.subjectAltName ?? "", new RegExp(`URI:spiffe://shopmesh/${gone}`));

    const third = await certs(args);
    t.regex(third.stdout, /already holds credentials/);
    if (production)
      t.deepEqual(modes(out), containerReadable(out), "compose's modes, re-issue too");
  });
}

/** The permission bits of a folder and of each of its files, in octal. */
const modes = (dir: string) =>
  Object.fromEntries(
    [".", ...readdirSync(dir)].map((name) => [
      name,
      (statSync(path.join(dir, name)).mode & 0o777).toString(8),
    ]),
  );

/** A production set compose mounts: readable by the containers' uids, in a folder of the owner's. */
const containerReadable = (dir: string) =>
  Object.fromEntries(
    Object.keys(modes(dir)).map((name) => [
      name,
      name === "." ? "700" : name === "ca.key" ? "600" : "644",
    ]),
  );

test("npm run certs -- --production makes files the containers' uids can read, in a folder of the owner's", async (t) => {
  t.timeout(120_000);
  const parent = await mkdtemp(path.join(tmpdir(), "shopmesh-certs-"));
  t.teardown(() => rm(parent, { recursive: true, force: true }));
  const out = path.join(parent, "secrets");
  const made = await certs(["--production", "--out", out]);
  t.is(made.code, 0, made.stderr);
  t.deepEqual(modes(out), containerReadable(out));
  t.true(Object.keys(modes(out)).includes("page-token.secret"));

  // The development set is mounted nowhere: its keys stay the owner's.
  const dev = path.join(parent, "certs");
  t.is((await certs(["--out", dev])).code, 0);
  t.is(modes(dev)["jwt.key"], "600");
});
