// The mesh's credentials: a CA and one certificate per identity (openssl), a JWT signing key and
// the JWKS that verifies it (jose), and tokens signed with that key. `npm run certs` makes the
// development set in .certs/; `npm run token` signs with it; tests make foreign sets to be refused.
import { execFileSync } from "node:child_process";
import { createPublicKey, randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import path from "node:path";
import { exportJWK, exportPKCS8, generateKeyPair, importPKCS8, SignJWT } from "jose";
import {
  DEV_AUDIENCE,
  DEV_CA_NAME,
  DEV_CERTS_DIR,
  DEV_ISSUER,
  DEV_KEY_ID_PREFIX,
} from "../../kit/security/security.js";
import { IDENTITY_PREFIX, type TlsFiles } from "../../kit/security/tls.js";
import { registry } from "../../services/registry.js";

/** The subject of the launchers' admin token: a caller with role admin, not a user record. */
export const LAUNCH_ADMIN = "admin";

/** Every service, the edge (Envoy) and `cli`, the identity of operators' tools. */
export const IDENTITIES = [...registry.names, "edge", "cli"];

export interface CredentialOptions {
  /** The CA's common name; the production profile refuses DEV_CA_NAME. */
  caName?: string;
  /** Prefix of the JWT key's id; the production profile refuses DEV_KEY_ID_PREFIX. */
  keyIdPrefix?: string;
  identities?: readonly string[];
  /** Days the certificates are valid. */
  days?: number;
  /** Write page-token.secret too: 32 random bytes, hex. */
  pageTokenSecret?: boolean;
  /** For compose's secrets: files every uid can read, in a folder only its owner can enter. */
  containerReadable?: boolean;
}

function openssl(args: readonly string[], cwd: string): void {
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });
}

/**
 * Writes ca.crt/ca.key, <identity>.crt/.key for each identity (SAN: URI
 * spiffe://shopmesh/<identity>, DNS <identity> and localhost, IP 127.0.0.1; for both server and
 * client use), jwt.key (ES256, PKCS#8) and jwks.json into `dir`.
 */
export async function makeCredentials(dir: string, options: CredentialOptions = {}): Promise<void> {
  mkdirSync(dir, { recursive: true });
  const days = String(options.days ?? 825);
  openssl(
    [
      ...["req", "-x509", "-new", ...EC, "-keyout", "ca.key", "-out", "ca.crt", "-days", days],
      ...["-subj", `/O=shopmesh/CN=${options.caName ?? DEV_CA_NAME}`],
      ...["-addext", "basicConstraints=critical,CA:TRUE"],
      ...["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
    ],
    dir,
  );
  for (const name of options.identities ?? IDENTITIES) issueIdentity(dir, name, days);
  const { privateKey, publicKey } = await generateKeyPair("ES256", { extractable: true });
  const kid = `${options.keyIdPrefix ?? DEV_KEY_ID_PREFIX}${randomBytes(6).toString("hex")}`;
  writeFileSync(path.join(dir, "jwt.key"), await exportPKCS8(privateKey), { mode: 0o600 });
  const jwk = { ...(await exportJWK(publicKey)), kid, alg: "ES256", use: "sig" };
  writeFileSync(path.join(dir, "jwks.json"), `${JSON.stringify({ keys: [jwk] }, null, 2)}\n`);
  if (options.pageTokenSecret) {
    writeFileSync(path.join(dir, "page-token.secret"), randomBytes(32).toString("hex"), {
      mode: 0o600,
    });
  }
  if (options.containerReadable) makeContainerReadable(dir);
}

/**
 * Issues, from the CA already in `dir`, a certificate and key for every identity that lacks
 * either (a service added since the set was made); the CA, the other identities and the JWT key
 * stay as they are. Returns the identities issued.
 */
export function issueMissing(dir: string, options: CredentialOptions = {}): string[] {
  const missing = (options.identities ?? IDENTITIES).filter(
    (name) => !Object.values(identityFiles(dir, name)).every((file) => existsSync(file)),
  );
  for (const name of missing) issueIdentity(dir, name, String(options.days ?? 825));
  if (options.containerReadable) makeContainerReadable(dir);
  return missing;
}

const EC = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];

/** <name>.key and <name>.crt, signed by ca.crt/ca.key in `dir`. */
function issueIdentity(dir: string, name: string, days: string): void {
  const extensions = `${name}.ext`;
  writeFileSync(
    path.join(dir, extensions),
    [
      "basicConstraints=CA:FALSE",
      "keyUsage=critical,digitalSignature",
      "extendedKeyUsage=serverAuth,clientAuth",
      `subjectAltName=URI:${IDENTITY_PREFIX}${name},DNS:${name},DNS:localhost,IP:127.0.0.1`,
      "",
    ].join("\n"),
  );
  openssl(
    [
      ...["req", "-new", ...EC, "-keyout", `${name}.key`, "-out", `${name}.csr`],
      ...["-subj", `/O=shopmesh/CN=${name}`],
    ],
    dir,
  );
  openssl(
    [
      ...["x509", "-req", "-in", `${name}.csr`, "-CA", "ca.crt", "-CAkey", "ca.key"],
      ...["-set_serial", `0x${randomBytes(12).toString("hex")}`, "-days", days],
      ...["-extfile", extensions, "-out", `${name}.crt`],
    ],
    dir,
  );
  rmSync(path.join(dir, `${name}.csr`));
  rmSync(path.join(dir, extensions));
}

/**
 * Compose mounts a secret file with its host owner and mode, and the containers run as other
 * uids (Envoy 101, the services 1000): the files they mount are readable by all (0644), and the
 * folder, which only its owner may enter (0700), keeps them from the host's other users. ca.key
 * is mounted nowhere and stays 0600.
 */
function makeContainerReadable(dir: string): void {
  chmodSync(dir, 0o700);
  for (const file of readdirSync(dir)) {
    chmodSync(path.join(dir, file), file === "ca.key" ? 0o600 : 0o644);
  }
}

/**
 * The development credentials in .certs/, made once. Safe when several processes ask at once:
 * each makes a set in a temp folder and the first to rename it into place wins.
 */
export async function ensureDevCredentials(dir = DEV_CERTS_DIR): Promise<string> {
  if (existsSync(path.join(dir, "jwks.json"))) return dir;
  const parent = path.dirname(dir);
  const temp = mkdtempSync(path.join(parent, ".certs-"));
  try {
    await makeCredentials(temp);
    try {
      renameSync(temp, dir);
    } catch (error) {
      if (!existsSync(path.join(dir, "jwks.json"))) throw error;
    }
  } finally {
    rmSync(temp, { recursive: true, force: true });
  }
  return dir;
}

/** The TLS files of one identity in a credentials folder. */
export const identityFiles = (dir: string, name: string): TlsFiles => ({
  cert: path.join(dir, `${name}.crt`),
  key: path.join(dir, `${name}.key`),
  ca: path.join(dir, "ca.crt"),
});

export interface TokenOptions {
  /** The subject: the caller's user_id. */
  user: string;
  roles?: readonly string[];
  /** Lifetime in seconds (1 h by default); negative for a token that has already expired. */
  ttlSeconds?: number;
  issuer?: string;
  audience?: string;
  /** The signing key's folder (jwt.key, jwks.json); .certs/ by default. */
  dir?: string;
  /** The signing key and the JWKS holding its kid, when not in `dir`. */
  keyFile?: string;
  jwksFile?: string;
}

/** Signing keys by file, imported once per process, with their public halves as JWKs. */
const signingKeys = new Map<
  string,
  { key: ReturnType<typeof importPKCS8>; x?: string; y?: string }
>();

/**
 * A JWT signed with the key in `dir`, its kid the one jwks.json gives that key's public half: in
 * a key rollover the JWKS holds the old key and the new one.
 */
export async function signToken(options: TokenOptions): Promise<string> {
  const dir = options.dir ?? DEV_CERTS_DIR;
  const keyFile = options.keyFile ?? path.join(dir, "jwt.key");
  let signing = signingKeys.get(keyFile);
  if (!signing) {
    const pem = readFileSync(keyFile, "utf8");
    const { x, y } = createPublicKey(pem).export({ format: "jwk" });
    signing = { key: importPKCS8(pem, "ES256"), x, y };
    signingKeys.set(keyFile, signing);
  }
  const key = await signing.key;
  const jwks = options.jwksFile ?? path.join(dir, "jwks.json");
  const { keys } = JSON.parse(readFileSync(jwks, "utf8")) as {
    keys: { kid?: string; x?: string; y?: string }[];
  };
  // An EC key (ES256) is its point: both coordinates, both defined.
  const listed = keys.find(
    (jwk) => signing.x !== undefined && jwk.x === signing.x && jwk.y === signing.y,
  );
  if (!listed) {
    throw new Error(
      `the public key of ${keyFile} is not in ${jwks}: add it there, or name the JWKS that holds it`,
    );
  }
  const now = Math.floor(Date.now() / 1000);
  const ttl = options.ttlSeconds ?? 3600;
  return new SignJWT({ roles: [...(options.roles ?? [])] })
    .setProtectedHeader({ alg: "ES256", ...(listed.kid && { kid: listed.kid }), typ: "JWT" })
    .setSubject(options.user)
    .setIssuer(options.issuer ?? DEV_ISSUER)
    .setAudience(options.audience ?? DEV_AUDIENCE)
    .setIssuedAt(ttl < 0 ? now + ttl - 60 : now)
    .setExpirationTime(now + ttl)
    .sign(key);
}

/** "1h", "30m", "90s" or a number of seconds, as seconds. */
export function parseTtl(text: string): number {
  const match = /^(-?\d+)([smhd]?)$/.exec(text.trim());
  if (!match) throw new Error(`--ttl must look like 1h, 30m, 90s or 3600, got "${text}"`);
  const unit = { "": 1, s: 1, m: 60, h: 3600, d: 86_400 }[match[2] as "" | "s" | "m" | "h" | "d"];
  return Number(match[1]) * unit;
}

/** Moves a finished credentials folder into place, replacing what was there (npm run certs --force). */
export function replaceDir(from: string, to: string): void {
  rmSync(to, { recursive: true, force: true });
  renameSync(from, to);
}
