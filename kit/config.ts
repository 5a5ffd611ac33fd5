import path from "node:path";

/** Reads environment variables with typed defaults; a malformed value stops the process early. */
export const env = {
  string(name: string, fallback: string): string {
    const value = process.env[name];
    return value === undefined || value === "" ? fallback : value;
  },
  int(name: string, fallback: number): number {
    const raw = process.env[name];
    if (raw === undefined || raw === "") return fallback;
    const value = Number(raw);
    if (!Number.isInteger(value)) throw new Error(`${name} must be an integer, got "${raw}"`);
    return value;
  },
  bool(name: string, fallback: boolean): boolean {
    const raw = process.env[name];
    if (raw === undefined || raw === "") return fallback;
    if (["1", "true", "yes"].includes(raw)) return true;
    if (["0", "false", "no"].includes(raw)) return false;
    throw new Error(`${name} must be true or false, got "${raw}"`);
  },
};

/** Settings every service reads the same way. README "Configuration" documents each one. */
export interface ServerConfig {
  host: string;
  port: number;
  /** SQLite file, or ":memory:". */
  database: string;
  logLevel: string;
  /** How long a graceful shutdown waits for in-flight calls before cancelling them. */
  shutdownGraceMs: number;
  /**
   * How long a client connection may live before the server asks the client to reconnect
   * (GOAWAY), so clients that resolve a DNS name pick up replicas added since; 0 keeps
   * connections for ever.
   */
  maxConnectionAgeMs: number;
  /** How long calls still running on a connection past its age may take before it closes. */
  maxConnectionAgeGraceMs: number;
}

/** The config of one service process, from SHOP_* variables with the documented defaults. */
export function serverConfig(service: string, defaultPort: number): ServerConfig {
  const dataDir = env.string("SHOP_DATA_DIR", "data");
  return {
    host: env.string("SHOP_HOST", "127.0.0.1"),
    port: env.int("SHOP_PORT", defaultPort),
    database: env.string("SHOP_DATABASE", path.join(dataDir, `${service}.sqlite`)),
    logLevel: env.string("SHOP_LOG_LEVEL", "info"),
    shutdownGraceMs: env.int("SHOP_SHUTDOWN_GRACE_MS", 10_000),
    maxConnectionAgeMs: env.int("SHOP_MAX_CONNECTION_AGE_MS", 300_000),
    maxConnectionAgeGraceMs: env.int("SHOP_MAX_CONNECTION_AGE_GRACE_MS", 30_000),
  };
}
