// The security settings of a service process, from the environment or mounted files, and the
// profile that decides what is acceptable. README "Configuration" and "Trust model" document them.
//
// - development (the default): plaintext is allowed, but only on a loopback address; the
//   credentials default to what `npm run certs` made in .certs/ and the page-token secret to a
//   built-in one. JWTs are always checked.
// - production: TLS is required, and the process refuses to start with the built-in page-token
//   secret, with anything `npm run certs` made (its development CA, its JWT key), without an
//   explicit JWKS, issuer and audience, or with a PostgreSQL server off its host that its URL
//   does not reach over TLS.
import { createPrivateKey, X509Certificate } from "node:crypto";
import { existsSync, readFileSync } from "node:fs";
import { BlockList, isIPv4, isIPv6 } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { JSONWebKeySet } from "jose";
import { env } from "../config.js";
import { isPostgresUrl, postgresTarget } from "../db/postgres.js";
import { DEV_PAGE_TOKEN_SECRET, pageTokenSecret } from "../page-token.js";
import type { JwtSettings } from "./auth.js";
import type { TlsFiles, TlsMaterial } from "./tls.js";

export type Profile = "development" | "production";

/** The folder of the project's package.json, from the sources or from the compiled dist/. */
function projectRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, "package.json")) && path.dirname(dir) !== dir) {
    dir = path.dirname(dir);
  }
  return dir;
}

/** Where `npm run certs` writes the development CA, certificates and JWT key (git-ignored). */
export const DEV_CERTS_DIR = path.join(projectRoot(), ".certs");
/** The subject of the CA `npm run certs` makes; the production profile refuses it. */
export const DEV_CA_NAME = "shopmesh development CA";
/** The key id prefix of JWT keys `npm run certs` makes; the production profile refuses them. */
export const DEV_KEY_ID_PREFIX = "shopmesh-dev-";
export const DEV_ISSUER = "https://shopmesh.dev/development";
export const DEV_AUDIENCE = "shopmesh";
/** The issuer of tokens signed with a key `npm run certs -- --production` made. */
export const PRODUCTION_ISSUER = "https://shopmesh.dev/issuer";

export interface SecurityConfig {
  profile: Profile;
  /** The process's mTLS identity; undefined for plaintext. */
  tls: TlsMaterial | undefined;
  jwt: JwtSettings;
}

export class SecurityError extends Error {}

/** The TLS files named by SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE and SHOP_TLS_CA_FILE: all or none. */
export function tlsFilesFromEnv(): TlsFiles | undefined {
  const files = {
    cert: env.string("SHOP_TLS_CERT_FILE", ""),
    key: env.string("SHOP_TLS_KEY_FILE", ""),
    ca: env.string("SHOP_TLS_CA_FILE", ""),
  };
  const set = Object.values(files).filter(Boolean).length;
  if (set === 0) return undefined;
  if (set < 3) {
    throw new SecurityError(
      "set all of SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE and SHOP_TLS_CA_FILE, or none",
    );
  }
  return files;
}

export function profileFromEnv(): Profile {
  const profile = env.string("SHOP_PROFILE", "development");
  if (profile !== "development" && profile !== "production") {
    throw new SecurityError(`SHOP_PROFILE must be development or production, got "${profile}"`);
  }
  return profile;
}

/** The contents of the file `variable` names; an error naming both when it cannot be read. */
function readNamed(variable: string, file: string): Buffer {
  try {
    return readFileSync(file);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new SecurityError(`${variable}: cannot read ${file} (${code})`);
  }
}

function readJwks(file: string): JSONWebKeySet {
  if (!existsSync(file)) {
    throw new SecurityError(`no JWKS at ${file}: run npm run certs, or set SHOP_JWKS_FILE`);
  }
  let jwks: JSONWebKeySet;
  try {
    jwks = JSON.parse(readNamed("SHOP_JWKS_FILE", file).toString("utf8"));
  } catch (error) {
    if (error instanceof SecurityError) throw error;
    throw new SecurityError(`SHOP_JWKS_FILE: ${file} is not JSON`);
  }
  if (!Array.isArray(jwks?.keys) || jwks.keys.length === 0) {
    throw new SecurityError(`SHOP_JWKS_FILE: ${file} holds no keys`);
  }
  return jwks;
}

/** What `parse` returns; when it throws, an error naming the variable, its file and `what`. */
function parsed<T>(variable: string, file: string, what: string, parse: () => T): T {
  try {
    return parse();
  } catch {
    throw new SecurityError(`${variable}: ${file} is not ${what}`);
  }
}

/**
 * The PEM files SHOP_TLS_*_FILE name, checked here: grpc-js would report a bad certificate or
 * key as a port it cannot listen on, and would serve with a CA file that is not one, refusing
 * every client.
 */
function readTls(files: TlsFiles): TlsMaterial {
  const tls = {
    cert: readNamed("SHOP_TLS_CERT_FILE", files.cert),
    key: readNamed("SHOP_TLS_KEY_FILE", files.key),
    ca: readNamed("SHOP_TLS_CA_FILE", files.ca),
  };
  const cert = parsed("SHOP_TLS_CERT_FILE", files.cert, "a PEM certificate", () =>
    certificates(tls.cert),
  )[0] as X509Certificate;
  const key = parsed("SHOP_TLS_KEY_FILE", files.key, "a PEM private key", () =>
    createPrivateKey(tls.key),
  );
  if (!cert.checkPrivateKey(key)) {
    throw new SecurityError(
      `SHOP_TLS_KEY_FILE: ${files.key} is not the key of the certificate in ${files.cert}`,
    );
  }
  checkValidity(cert, files.cert);
  parsed("SHOP_TLS_CA_FILE", files.ca, "a PEM certificate", () => certificates(tls.ca));
  return tls;
}

/** A certificate issued this long ahead of this host's clock still starts: clocks drift. */
const CLOCK_SKEW_MS = 5 * 60_000;

/**
 * Refuses a certificate outside its validity, which every peer would refuse: the service would
 * start, report SERVING and fail each call it makes or takes, with nothing in its own log.
 */
export function checkValidity(cert: X509Certificate, file: string, now = Date.now()): void {
  if (now > Date.parse(cert.validTo)) {
    throw new SecurityError(
      `SHOP_TLS_CERT_FILE: the certificate in ${file} expired on ${cert.validTo}: issue it again`,
    );
  }
  if (now + CLOCK_SKEW_MS < Date.parse(cert.validFrom)) {
    throw new SecurityError(
      `SHOP_TLS_CERT_FILE: the certificate in ${file} is not valid before ${cert.validFrom}: check this host's clock`,
    );
  }
}

/**
 * When this process's certificate, and the first to expire of its CA bundle's, stop being valid
 * (ms since the epoch): a restart with renewed files must come before either.
 */
export function certificateExpiries(tls: TlsMaterial): { identity: number; ca: number } {
  const [cert] = certificates(tls.cert) as [X509Certificate];
  return {
    identity: Date.parse(cert.validTo),
    ca: Math.min(...certificates(tls.ca).map((ca) => Date.parse(ca.validTo))),
  };
}

/** Every certificate of a PEM bundle; throws when it holds none, or one that does not parse. */
function certificates(pem: Buffer): X509Certificate[] {
  const blocks =
    pem.toString("latin1").match(/-----BEGIN CERTIFICATE-----[^-]+-----END CERTIFICATE-----/g) ??
    [];
  if (blocks.length === 0) throw new Error("no certificate");
  return blocks.map((block) => new X509Certificate(block));
}

/**
 * The security settings of this process from SHOP_* variables, checked against its profile.
 * Throws a SecurityError naming what is wrong; a service refuses to start on one.
 */
export function securityFromEnv(): SecurityConfig {
  const profile = profileFromEnv();
  const production = profile === "production";
  const explicit = (name: string, fallback: string) => {
    const value = env.string(name, "");
    // Blanks are no issuer, audience or file: they count as unset.
    if (value.trim()) return value;
    if (production) throw new SecurityError(`the production profile needs ${name}`);
    return fallback;
  };
  const files = tlsFilesFromEnv();
  // Read now, in every profile: a secret file that cannot be read stops the start, not a list call.
  pageTokenSecret();
  const config: SecurityConfig = {
    profile,
    tls: files && readTls(files),
    jwt: {
      jwks: readJwks(explicit("SHOP_JWKS_FILE", `${DEV_CERTS_DIR}/jwks.json`)),
      issuer: explicit("SHOP_JWT_ISSUER", DEV_ISSUER),
      audience: explicit("SHOP_JWT_AUDIENCE", DEV_AUDIENCE),
    },
  };
  if (production) refuseDevelopmentSecrets(config);
  return config;
}

/** What the production profile will not run with. */
function refuseDevelopmentSecrets(config: SecurityConfig): void {
  if (!config.tls) {
    throw new SecurityError(
      "the production profile needs TLS: set SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE, SHOP_TLS_CA_FILE",
    );
  }
  const secret = pageTokenSecret();
  // Blanks are no secret: 40 spaces are as easy to guess as none.
  if (secret === DEV_PAGE_TOKEN_SECRET || secret.replace(/\s/g, "").length < 32) {
    throw new SecurityError(
      "the production profile needs a page-token secret of 32 characters or more of its own, not counting blanks: set SHOP_PAGE_TOKEN_SECRET or SHOP_PAGE_TOKEN_SECRET_FILE",
    );
  }
  // Anywhere in the bundle: a CA rollover puts several in one file.
  if (certificates(config.tls.ca).some((ca) => ca.subject.includes(`CN=${DEV_CA_NAME}`))) {
    throw new SecurityError(`the production profile refuses the ${DEV_CA_NAME} (npm run certs)`);
  }
  if (config.jwt.jwks.keys.some((key) => key.kid?.startsWith(DEV_KEY_ID_PREFIX))) {
    throw new SecurityError(
      "the production profile refuses the development JWT key (npm run certs)",
    );
  }
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|\[::1\]|localhost)$/;

/** Plaintext serves only on loopback, in the development profile. */
export function checkBinding(config: SecurityConfig, host: string): void {
  if (config.tls || LOOPBACK.test(host)) return;
  throw new SecurityError(
    `plaintext is for loopback only, and ${host} is not: set SHOP_TLS_CERT_FILE, SHOP_TLS_KEY_FILE and SHOP_TLS_CA_FILE`,
  );
}

/** Loopback addresses: 127.0.0.0/8, ::1 and 127.0.0.0/8 mapped into IPv6. */
const LOOPBACK_ADDRESSES = new BlockList();
LOOPBACK_ADDRESSES.addSubnet("127.0.0.0", 8, "ipv4");
LOOPBACK_ADDRESSES.addAddress("::1", "ipv6");
LOOPBACK_ADDRESSES.addSubnet("::ffff:127.0.0.0", 104, "ipv6");

/** A host on this machine: a Unix socket's folder, or loopback by name or address. */
function onThisHost(host: string): boolean {
  const bare = host.replace(/^\[(.*)\]$/, "$1").toLowerCase();
  if (bare.startsWith("/") || bare === "localhost") return true;
  const family = isIPv4(bare) ? "ipv4" : isIPv6(bare) ? "ipv6" : undefined;
  return family !== undefined && LOOPBACK_ADDRESSES.check(bare, family);
}

/** Whether `url` (or PGSSLMODE, for a URL silent on it) asks for plaintext: sslmode=disable. */
function plaintextAsked(url: string): boolean {
  let modes: string[];
  try {
    modes = new URL(url).searchParams.getAll("sslmode");
  } catch {
    return false;
  }
  return (modes.at(-1) ?? process.env.PGSSLMODE) === "disable";
}

/**
 * The production profile reaches a PostgreSQL server off its own host over TLS only, unless
 * `sslmode=disable` asks for plaintext on purpose (behind a proxy that encrypts, say):
 * node-postgres sends plaintext when a URL says nothing of TLS. The URL is read as the driver
 * reads it (postgresTarget), PGHOST and PGSSLMODE included. `variable` names the setting the URL
 * came from.
 */
export function checkDatabaseTransport(profile: Profile, location: string, variable: string): void {
  if (profile !== "production" || !isPostgresUrl(location)) return;
  const target = postgresTarget(location);
  if (!target || target.tls || onThisHost(target.host) || plaintextAsked(location)) return;
  throw new SecurityError(
    `the production profile reaches PostgreSQL at ${target.host} over TLS only: add sslmode=verify-full&sslrootcert=<the server's CA file> to ${variable}, or sslmode=disable for plaintext on purpose`,
  );
}
