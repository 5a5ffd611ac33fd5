// npm run certs: the development credentials in .certs/ (git-ignored): a development CA, one
// certificate per mesh identity (every registered service, edge for Envoy, cli for operators'
// tools), a JWT signing key and the JWKS the services and Envoy verify tokens with. Made once;
// later runs issue, from the same CA, the certificates of identities that have none (a service
// added since); `--force` makes a new set, CA and JWT key included. Nothing is downloaded:
// openssl and node:crypto (through jose).
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
import { DEV_CERTS_DIR } from "../kit/security/security.js";
import { IDENTITIES, issueMissing, makeCredentials, replaceDir } from "./lib/credentials.js";

const { values } = parseArgs({
  options: {
    force: { type: "boolean", default: false },
    out: { type: "string" },
    production: { type: "boolean", default: false },
  },
});
const force = values.force;
const out = path.resolve(values.out ?? DEV_CERTS_DIR);
const where = path.relative(process.cwd(), out) || out;
const options = values.production
  ? {
      caName: "shopmesh mesh CA",
      keyIdPrefix: "shopmesh-",
      pageTokenSecret: true,
      // Compose mounts them with their host mode into containers of other uids.
      containerReadable: true,
    }
  : {};

if (existsSync(path.join(out, "jwks.json")) && !force) {
  const issued = issueMissing(out, options);
  console.log(
    issued.length > 0
      ? `certs: issued ${issued.join(", ")} from the CA in ${where}; kept the CA, the other identities and the JWT key`
      : `certs: ${where} already holds credentials (--force for new ones)`,
  );
} else {
  const temp = mkdtempSync(path.join(path.dirname(out), ".certs-"));
  await makeCredentials(temp, options);
  replaceDir(temp, out);
  console.log(
    `certs: wrote a CA, certificates for ${IDENTITIES.join(", ")}, and a JWT key with its JWKS to ${where}`,
  );
}
