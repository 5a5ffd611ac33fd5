import path from "node:path";

/** A setting the operator gave is malformed: its message names the variable and what it got. */
export class SettingError extends Error {}

/** The longest a Node timer waits: 2^31 − 1 ms, about 24.8 days. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

/** The longest connection age whose timer, with grpc-js's 10% of jitter, Node still takes. */
const MAX_CONNECTION_AGE_MS = Math.floor(MAX_TIMER_MS / 1.1);

/** Reads environment variables with typed defaults; a malformed value stops the process early. */
export const env = {
  string(name: string, fallback: string): string {
    const value = process.env[name];
    return value === undefined || value === "" ? fallback : value;
  },
  /** A decimal integer, within `min` and `max` when given. */
  int(name: string, fallback: number, { min, max }: { min?: number; max?: number } = {}): number {
    const raw = process.env[name];
    if (raw === undefined || raw === "") return fallback;
    // Number() would also read " " as 0, and take "0x10" and "1e3".
    const value = /^\s*[+-]?\d+\s*$/.test(raw) ? Number(raw) : Number.NaN;
    if (!Number.isSafeInteger(value)) {
      throw new SettingError(`${name} must be an integer, got "${raw}"`);
    }
    if ((min !== undefined && value < min) || (max !== undefined && value > max)) {
      const range =
        max === undefined
          ? `at least ${min}`
          : min === undefined
            ? `at most ${max}`
            : `between ${min} and ${max}`;
      throw new SettingError(`${name} must be ${range}, got "${raw}"`);
    }
    return value;
  },
  /**
   * Milliseconds, at least `min`, and at most `max`, MAX_TIMER_MS by default: Node's timers take
   * no longer, and fire at once for a longer one. A timer set from the value plus something more
   * needs a lower `max`.
   */
  ms(name: string, fallback: number, min: number, max = MAX_TIMER_MS): number {
    return env.int(name, fallback, { min, max });
  },
  /** A TCP port: 0 (any free one) to 65535. */
  port(name: string, fallback: number): number {
    return env.int(name, fallback, { min: 0, max: 65_535 });
  },
  /** One of `values`. */
  oneOf<T extends string>(name: string, fallback: T, values: readonly T[]): T {
    const value = env.string(name, fallback);
    if (!(values as readonly string[]).includes(value)) {
      throw new SettingError(`${name} must be one of ${values.join(", ")}, got "${value}"`);
    }
    return value as T;
  },
  bool(name: string, fallback: boolean): boolean {
    const raw = process.env[name];
    if (raw === undefined || raw === "") return fallback;
    if (["1", "true", "yes"].includes(raw)) return true;
    if (["0", "false", "no"].includes(raw)) return false;
    throw new SettingError(`${name} must be true or false, got "${raw}"`);
  },
};

/** `host:port`, an IPv6 literal in brackets: `[::1]:50051`, as grpc-js and URLs take it. */
export const hostPort = (host: string, port: number) =>
  `${host.includes(":") && !host.startsWith("[") ? `[${host}]` : host}:${port}`;

/** A host as listen() takes it: an IPv6 literal without brackets. */
export const bareHost = (host: string) => host.replace(/^\[(.*)\]$/, "$1");

/** `SHOP_<NAME>_<SETTING>`, e.g. SHOP_USER_ADDR: a setting about one service, by its name. */
export const serviceVariable = (name: string, setting: string) =>
  `SHOP_${name.toUpperCase()}_${setting}`;

/**
 * A database URL fit for a log line: its password, in the user part or as a `password` or
 * `sslpassword` parameter, is ***. Works on a URL that does not parse, e.g. a mistyped one.
 */
export const redactUrl = (url: string) =>
  url
    .replace(/^([^/]*\/\/[^/:@]*:)[^/]*@/, "$1***@")
    .replace(/([?&](?:ssl)?password=)[^&#]*/gi, "$1***");

function databaseUrl(name: string, fallback: string): string {
  // Set but empty is an operator's mistake (a Secret's empty key, say): the fallback, a SQLite
  // file of each replica's own, would serve on with data diverging between replicas.
  if (process.env[name] === "") {
    throw new SettingError(`${name} is set but empty: give a postgres:// URL, or unset it`);
  }
  const url = env.string(name, fallback);
  if (url && !/^postgres(ql)?:\/\//i.test(url)) {
    throw new SettingError(
      `${name} must be a postgres:// or postgresql:// URL, got "${redactUrl(url)}"`,
    );
  }
  // Not quoted: the URL may hold a password.
  if (url && !parsesAsPg(url)) throw new SettingError(`${name} is not a URL that parses`);
  return url;
}

/** Whether node-postgres can read `url`: it encodes stray spaces and `%`, and takes no host. */
function parsesAsPg(url: string): boolean {
  const encoded = / |%[^a-f0-9]|%[a-f0-9][^a-f0-9]/i.test(url)
    ? encodeURI(url).replace(/%25(\d\d)/g, "%$1")
    : url;
  return URL.canParse(encoded) || URL.canParse(encoded.replace("@/", "@host/"));
}

/** The variable a service's database location came from (databaseLocation), for its errors. */
export function databaseVariable(service: string): string {
  const named = [serviceVariable(service, "DATABASE_URL"), "SHOP_DATABASE_URL", "SHOP_DATABASE"];
  return named.find((name) => env.string(name, "") !== "") ?? "SHOP_DATA_DIR";
}

/**
 * Where a service's data lives: SHOP_<NAME>_DATABASE_URL, else SHOP_DATABASE_URL (PostgreSQL:
 * the service's tables in a schema named after it), else SHOP_DATABASE, else the SQLite file
 * `<service>.sqlite` in SHOP_DATA_DIR.
 */
export function databaseLocation(service: string): string {
  const own = serviceVariable(service, "DATABASE_URL");
  // The shared URL is read only for a service without its own.
  const url =
    process.env[own] !== undefined ? databaseUrl(own, "") : databaseUrl("SHOP_DATABASE_URL", "");
  if (url) return url;
  const dataDir = env.string("SHOP_DATA_DIR", "data");
  return env.string("SHOP_DATABASE", path.join(dataDir, `${service}.sqlite`));
}

/**
 * SHOP_SQLITE_SYNC's values: no answer tells of a commit before it is on disk (`before-reply`,
 * kit/db/wal-sync.ts), or SQLite syncs commits at its next checkpoint (`at-checkpoint`).
 */
export const SQLITE_SYNC = ["before-reply", "at-checkpoint"] as const;

/** pino's levels, SHOP_LOG_LEVEL's values. */
export const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace", "silent"] as const;

/** Settings every service reads the same way. README "Configuration" documents each one. */
export interface ServerConfig {
  host: string;
  port: number;
  /** A postgres:// URL, an SQLite file, or ":memory:" (kit/db/index.ts). */
  database: string;
  /** SQLite files: when commits reach the disk, and so what an answer waits for. */
  sqliteSync: (typeof SQLITE_SYNC)[number];
  logLevel: string;
  /** How long a graceful shutdown waits for in-flight calls before cancelling them. */
  shutdownGraceMs: number;
  /** How long a shutdown keeps serving, health NOT_SERVING, before it refuses new calls. */
  shutdownAnnounceMs: number;
  /**
   * How long a client connection may live before the server asks the client to reconnect
   * (GOAWAY), so clients that resolve a DNS name pick up replicas added since; 0 keeps
   * connections for ever.
   */
  maxConnectionAgeMs: number;
  /** How long calls still running on a connection past its age may take before it closes. */
  maxConnectionAgeGraceMs: number;
  /**
   * List calls served at once, each until its page is written out; more wait their turn. Bounds
   * the memory pages take (up to 2 MB each); 0: no bound.
   */
  maxPagesInFlight: number;
  /** How long a page may wait for its caller to read it before it is dropped; 0: no bound. */
  pageWriteTimeoutMs: number;
  /** Server streams (WatchOrder) one signed-in caller may hold open at once; 0: no bound. */
  maxStreamsPerCaller: number;
  /**
   * A second port that serves grpc.health.v1 and nothing else, in plaintext, for probes that
   * cannot present a mesh certificate (the kubelet's `grpc:` probes); none when absent.
   */
  healthPort?: number;
}

/** The config of one service process, from SHOP_* variables with the documented defaults. */
export function serverConfig(service: string, defaultPort: number): ServerConfig {
  return {
    host: env.string("SHOP_HOST", "127.0.0.1"),
    port: env.port("SHOP_PORT", defaultPort),
    database: databaseLocation(service),
    sqliteSync: env.oneOf("SHOP_SQLITE_SYNC", "before-reply", SQLITE_SYNC),
    logLevel: env.oneOf("SHOP_LOG_LEVEL", "info", LOG_LEVELS),
    shutdownGraceMs: env.ms("SHOP_SHUTDOWN_GRACE_MS", 10_000, 0),
    shutdownAnnounceMs: env.ms("SHOP_SHUTDOWN_ANNOUNCE_MS", 0, 0, 60_000),
    // grpc-js adds up to 10% of jitter to it.
    maxConnectionAgeMs: env.ms("SHOP_MAX_CONNECTION_AGE_MS", 300_000, 0, MAX_CONNECTION_AGE_MS),
    maxConnectionAgeGraceMs: env.ms("SHOP_MAX_CONNECTION_AGE_GRACE_MS", 30_000, 0),
    maxPagesInFlight: env.int("SHOP_MAX_PAGES_IN_FLIGHT", 8, { min: 0 }),
    pageWriteTimeoutMs: env.ms("SHOP_PAGE_WRITE_TIMEOUT_MS", 30_000, 0),
    maxStreamsPerCaller: env.int("SHOP_MAX_STREAMS_PER_CALLER", 100, { min: 0 }),
    ...(process.env.SHOP_HEALTH_PORT && { healthPort: env.port("SHOP_HEALTH_PORT", 0) }),
  };
}
