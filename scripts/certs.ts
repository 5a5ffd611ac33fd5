// npm run certs: the development credentials in .certs/ (git-ignored): a development CA, one
// certificate per mesh identity (every registered service, edge for Envoy, cli for operators'
// tools), a JWT signing key and the JWKS the services and Envoy verify tokens with. Made once;
// `--force` makes a new set. Nothing is downloaded: openssl and node:crypto (through jose).
//
//   npm run certs [-- --force] [-- --out DIR]
//   npm run certs -- --production --out deploy/secrets
//
// --production makes a set of the mesh's own for a deployment (compose reads deploy/secrets/): a
// CA and a JWT key the production profile accepts, and a random page-token secret. Keep it out of
// git, and its CA key (ca.key) and jwt.key away from the services.
import { existsSync, mkdtempSync } from "node:fs";
import path from "node:path";
import { parseArgs } from "node:util";
import { DEV_CERTS_DIR } from "../kit/security.js";
import { IDENTITIES, makeCredentials, replaceDir } from "./lib/credentials.js";

const { values } = parseArgs({
  options: {
    force: { type: "boolean", default: false },
    out: { type: "string" },
    production: { type: "boolean", default: false },
  },
});
const force = values.force;
const out = path.resolve(values.out ?? DEV_CERTS_DIR);

if (existsSync(path.join(out, "jwks.json")) && !force) {
  console.log(
    `certs: ${path.relative(process.cwd(), out) || out} already holds credentials (--force for new ones)`,
  );
} else {
  const temp = mkdtempSync(path.join(path.dirname(out), ".certs-"));
  await makeCredentials(
    temp,
    values.production
      ? {
          caName: "shopmesh mesh CA",
          keyIdPrefix: "shopmesh-",
          pageTokenSecret: true,
        }
      : {},
  );
  replaceDir(temp, out);
  console.log(
    `certs: wrote a development CA, certificates for ${IDENTITIES.join(", ")}, and a JWT key with its JWKS to ${path.relative(process.cwd(), out) || out}`,
  );
}
