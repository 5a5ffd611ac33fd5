// npm run token -- --user <user_id> [--role admin] [--ttl 1h]: prints a development JWT for that
// user, signed with the key `npm run certs` made (made first if missing). Send it as
// `authorization: Bearer <token>`. `--ttl=-5m` makes one that expired five minutes ago.
import { parseArgs } from "node:util";
import { ensureDevCredentials, parseTtl, signToken } from "./lib/credentials.js";

try {
  const { values } = parseArgs({
    options: {
      user: { type: "string" },
      role: { type: "string", multiple: true },
      ttl: { type: "string", default: "1h" },
    },
  });
  if (!values.user) throw new Error("--user <user_id> is required");
  await ensureDevCredentials();
  console.log(
    await signToken({
      user: values.user,
      roles: values.role ?? [],
      ttlSeconds: parseTtl(values.ttl),
    }),
  );
} catch (error) {
  console.error(`token: ${error instanceof Error ? error.message : error}`);
  console.error("usage: npm run token -- --user <user_id> [--role admin] [--ttl 1h]");
  process.exitCode = 1;
}
