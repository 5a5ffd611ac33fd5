// npm run certs on a folder that holds a set already: it issues the missing identities'
// certificates from the CA it finds (a service added after the set was made) and keeps the rest.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { readFileSync, rmSync } from "node:fs";
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
  });
}
