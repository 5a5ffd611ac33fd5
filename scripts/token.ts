// npm run token -- --user <user_id> [--role admin] [--ttl 1h]: prints a development JWT for that
// user, signed with the key `npm run certs` made (made first if missing). Send it as
// `authorization: Bearer <token>`. `--ttl=-5m` makes one that expired five minutes ago.
//
// For a deployment's set, name its key and the issuer its profile checks:
//   npm run token -- --user <user_id> --key deploy/secrets/jwt.key --issuer https://shopmesh.dev/issuer
// The token's kid is the one the jwks.json beside the key (--jwks FILE for another) gives that
// key's public half, which must be there; in a key rollover it holds both keys. With --key,
// the issuer and audience default to SHOP_JWT_ISSUER and SHOP_JWT_AUDIENCE, as the services read
// them; a deployment's token for the development issuer would only be refused, so one is needed.
import path from "node:path";
import { parseArgs } from "node:util";
import { ensureDevCredentials, parseTtl, signToken } from "./lib/credentials.js";

const USAGE =
  "usage: npm run token -- --user <user_id> [--role admin] [--ttl 1h] [--key FILE [--jwks FILE]] [--issuer URL] [--audience NAME]";

try {
  const { values } = parseArgs({
    options: {
      user: { type: "string" },
      role: { type: "string", multiple: true },
      ttl: { type: "string", default: "1h" },
      key: { type: "string" },
      jwks: { type: "string" },
      issuer: { type: "string" },
      audience: { type: "string" },
      help: { type: "boolean", short: "h" },
    },
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  if (!values.user) throw new Error("--user <user_id> is required");
  if (values.jwks && !values.key) throw new Error("--jwks goes with --key");
  const issuer = values.issuer ?? (values.key ? process.env.SHOP_JWT_ISSUER?.trim() : undefined);
  const audience =
    values.audience ?? (values.key ? process.env.SHOP_JWT_AUDIENCE?.trim() : undefined);
  if (values.key && !issuer) {
    throw new Error(
      "--key signs for a deployment: give the issuer its services check (--issuer URL, or SHOP_JWT_ISSUER)",
    );
  }
  if (!values.key) await ensureDevCredentials();
  console.log(
    await signToken({
      user: values.user,
      roles: values.role ?? [],
      ttlSeconds: parseTtl(values.ttl),
      keyFile: values.key,
      jwksFile:
        values.jwks ?? (values.key ? path.join(path.dirname(values.key), "jwks.json") : undefined),
      issuer,
      ...(audience && { audience }),
    }),
  );
} catch (error) {
  console.error(`token: ${error instanceof Error ? error.message : error}`);
  console.error(USAGE);
  process.exitCode = 1;
}
