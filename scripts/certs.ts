// npm run certs: the development credentials in .certs/ (git-ignored): a development CA, one
// certificate per mesh identity (every registered service, edge for Envoy, cli for operators'
// tools), a JWT signing key and the JWKS the services and Envoy verify tokens with. Made once;
// `--force` makes a new set. Nothing is downloaded: openssl and node:crypto (through jose).
//
//   npm run certs [-- --force] [-- --out DIR]
import { existsSync, mkdtempSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { DEV_CERTS_DIR } from "../kit/security.js";
import { IDENTITIES, makeCredentials, replaceDir } from "./lib/credentials.js";

const { values } = parseArgs({
  options: { force: { type: "boolean", default: false }, out: { type: "string" } },
});
const force = values.force;
const out = path.resolve(values.out ?? DEV_CERTS_DIR);

if (existsSync(path.join(out, "jwks.json")) && !force) {
  console.log(
    `certs: ${path.relative(process.cwd(), out) || out} already holds credentials (--force for new ones)`,
  );
} else {
  const temp = mkdtempSync(path.join(path.dirname(out), ".certs-"));
  await makeCredentials(temp);
  replaceDir(temp, out);
  console.log(
    `certs: wrote a development CA, certificates for ${IDENTITIES.join(", ")}, and a JWT key with its JWKS to ${path.relative(process.cwd(), out) || out}`,
  );
}
