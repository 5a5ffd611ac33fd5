// A private PostgreSQL server on this machine: `initdb` into a folder, then `pg_ctl start` on a
// free loopback port (no Unix socket), as the `postgres` user when this process is root, since the
// server refuses to run as root. `npm run mesh -- --postgres`, the benchmark and the tests start
// one; a deployment points SHOP_DATABASE_URL at a server of its own instead.
//
//   const pg = await startLocalPostgres({ dir: "data/mesh/postgres" });
//   pg.url("shop");   // postgres://postgres@127.0.0.1:<port>/shop
//   await pg.stop();
import { spawn, spawnSync } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import {
  appendFile,
  chmod,
  chown,
  mkdir,
  mkdtemp,
  readFile,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import knex from "knex";
import { env } from "../../kit/config.js";
import { freePorts } from "./ports.js";
import type { Supervisor } from "./supervisor.js";

export interface LocalPostgres {
  port: number;
  /** The cluster's folder; its server log is `postgres.log` in it. */
  dir: string;
  logFile: string;
  /** The server's version, e.g. "15.18". */
  version: string;
  /** The server's main process (the postmaster), while it runs. */
  pid(): number | undefined;
  /** The URL of a database on this server, as its superuser `postgres` (trust on loopback). */
  url(database?: string): string;
  /** Creates a database (from `template` when given) unless it exists. */
  createDatabase(name: string, template?: string): Promise<void>;
  /**
   * A fast shutdown and a start on the same port, as a planned failover or an upgrade does:
   * connections are closed, new ones refused until the server accepts again; nothing committed
   * is lost.
   */
  restart(): Promise<void>;
  /** A fast shutdown: connections are closed, the data stays in `dir`. */
  stop(): Promise<void>;
}

export interface LocalPostgresOptions {
  /** The cluster's folder: initialized when it holds none, reused when it does. */
  dir: string;
  /** Skip fsync and friends: for a server whose data may be lost (tests, benchmarks). */
  throwaway?: boolean;
  /** TLS only: a self-signed certificate for 127.0.0.1 (`<dir>/server.crt`), plaintext refused. */
  tls?: boolean;
  /** More server settings, e.g. { max_connections: 300 }. */
  settings?: Record<string, string | number>;
  /** The port to listen on; a free one when left out. */
  port?: number;
}

/**
 * The folder of initdb and pg_ctl: SHOP_POSTGRES_BIN, else the one on PATH, else the newest
 * Debian install (/usr/lib/postgresql/<version>/bin, from the `postgresql` package).
 */
export function postgresBinDir(): string {
  const configured = process.env.SHOP_POSTGRES_BIN;
  if (configured) return configured;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir && existsSync(path.join(dir, "pg_ctl"))) return dir;
  }
  const debian = "/usr/lib/postgresql";
  const versions = existsSync(debian)
    ? readdirSync(debian)
        .filter((v) => existsSync(path.join(debian, v, "bin", "pg_ctl")))
        .sort((a, b) => Number(b) - Number(a))
    : [];
  if (!versions[0]) {
    throw new Error(
      "PostgreSQL's server programs (initdb, pg_ctl) are not installed: `apt-get install postgresql`, or set SHOP_POSTGRES_BIN",
    );
  }
  return path.join(debian, versions[0], "bin");
}

/** The user the server runs as: this one, or `postgres` when this process is root. */
function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const line = readFileSync("/etc/passwd", "utf8")
    .split("\n")
    .find((entry) => entry.startsWith("postgres:"));
  const [, , uid, gid] = line?.split(":") ?? [];
  if (!uid || !gid) {
    throw new Error(
      "PostgreSQL refuses to run as root and there is no `postgres` user; run as another user or install Debian's postgresql package",
    );
  }
  return { uid: Number(uid), gid: Number(gid) };
}

async function run(
  command: string,
  args: string[],
  user: { uid: number; gid: number } | undefined,
): Promise<string> {
  const child = spawn(command, args, { stdio: ["ignore", "pipe", "pipe"], ...user });
  let output = "";
  child.stdout.on("data", (chunk) => {
    output += chunk;
  });
  child.stderr.on("data", (chunk) => {
    output += chunk;
  });
  const [code] = await once(child, "exit");
  if (code !== 0) {
    throw new Error(`${path.basename(command)} ${args.join(" ")} failed (${code}):\n${output}`);
  }
  return output;
}

/** Writes a self-signed certificate for 127.0.0.1 and localhost, the server's key and its own CA. */
async function selfSignedCertificate(dir: string, user?: { uid: number; gid: number }) {
  const key = path.join(dir, "server.key");
  const crt = path.join(dir, "server.crt");
  const args = [
    ...["req", "-x509", "-nodes", "-days", "30", "-subj", "/CN=localhost"],
    ...["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"],
    ...["-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
    ...["-keyout", key, "-out", crt],
  ];
  await run("openssl", args, undefined);
  await chmod(key, 0o600);
  if (user) for (const file of [key, crt]) await chown(file, user.uid, user.gid);
}

/** The first folder above `dir` that does not let the server's user through, if any. */
function blockedAt(dir: string, user: { uid: number; gid: number }): string | undefined {
  for (let at = path.dirname(dir); ; at = path.dirname(at)) {
    if (existsSync(at)) {
      const { mode, uid, gid } = statSync(at);
      const through =
        mode & 0o001 || (uid === user.uid && mode & 0o100) || (gid === user.gid && mode & 0o010);
      if (!through) return at;
    }
    if (at === path.dirname(at)) return undefined;
  }
}

const TEMP_PREFIX = "shopmesh-pg-";

/**
 * A new temporary folder for a throwaway server's cluster, owned by the user the server runs as,
 * with the id of this process in `owner`: reapAbandoned() stops a server whose owner is gone.
 */
export async function privateTempDir(): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), TEMP_PREFIX));
  await writeFile(path.join(dir, "owner"), `${process.pid}\n`);
  const user = serverUser();
  if (user) await chown(dir, user.uid, user.gid);
  return dir;
}

/**
 * Stops the servers, and removes the folders, of privateTempDir()s whose process died without
 * stopping them (a test run killed at its timeout, say): pg_ctl leaves a server running on its
 * own, and nothing else would stop it.
 */
export async function reapAbandoned(): Promise<void> {
  const user = serverUser();
  for (const name of readdirSync(tmpdir())) {
    if (!name.startsWith(TEMP_PREFIX)) continue;
    const dir = path.join(tmpdir(), name);
    let owner: number;
    try {
      owner = Number.parseInt(readFileSync(path.join(dir, "owner"), "utf8"), 10);
    } catch {
      continue;
    }
    if (!Number.isInteger(owner) || alive(owner)) continue;
    for (const cluster of readdirSync(dir)) {
      const data = path.join(dir, cluster);
      if (!existsSync(path.join(data, "PG_VERSION"))) continue;
      spawnSync(
        path.join(postgresBinDir(), "pg_ctl"),
        ["-D", data, "-m", "immediate", "-w", "stop"],
        {
          stdio: "ignore",
          ...user,
        },
      );
    }
    await rm(dir, { recursive: true, force: true });
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Initializes the cluster in `options.dir` if needed, starts it, and waits until it accepts. */
export async function startLocalPostgres(options: LocalPostgresOptions): Promise<LocalPostgres> {
  const bin = postgresBinDir();
  const user = serverUser();
  const dir = path.resolve(options.dir);
  const blocked = user && blockedAt(dir, user);
  if (blocked) {
    throw new Error(
      `${blocked} does not let the postgres user through to ${dir}; chmod o+x it, or keep the server in a folder from privateTempDir()`,
    );
  }
  await mkdir(dir, { recursive: true });
  if (user) await chown(dir, user.uid, user.gid);
  await chmod(dir, 0o700);
  const logFile = path.join(dir, "postgres.log");

  if (!existsSync(path.join(dir, "PG_VERSION"))) {
    await run(
      path.join(bin, "initdb"),
      [
        ...["-D", dir, "-U", "postgres", "--auth=trust", "--encoding=UTF8", "--locale=C"],
        ...(options.throwaway ? ["--no-sync"] : []),
      ],
      user,
    );
    const settings: Record<string, string | number> = {
      listen_addresses: "'127.0.0.1'",
      unix_socket_directories: "''",
      ...(options.throwaway && {
        fsync: "off",
        synchronous_commit: "off",
        full_page_writes: "off",
      }),
      ...(options.tls && {
        ssl: "on",
        ssl_cert_file: "'server.crt'",
        ssl_key_file: "'server.key'",
      }),
      ...options.settings,
    };
    await appendFile(
      path.join(dir, "postgresql.conf"),
      `\n# Written by shopmesh (scripts/lib/postgres.ts)\n${Object.entries(settings)
        .map(([name, value]) => `${name} = ${value}`)
        .join("\n")}\n`,
    );
    if (options.tls) {
      await selfSignedCertificate(dir, user);
      // Loopback over TLS only: a plaintext connection finds no entry and is refused.
      const hba = path.join(dir, "pg_hba.conf");
      const lines = (await readFile(hba, "utf8"))
        .split("\n")
        .filter((line) => !/^\s*(host|local)\b/.test(line));
      await writeFile(hba, `${lines.join("\n")}\nhostssl all all 127.0.0.1/32 trust\n`);
    }
  }

  // A server a launch left running when it was killed: the caller holds the folder now.
  const status = spawnSync(path.join(bin, "pg_ctl"), ["-D", dir, "status"], { ...user });
  if (status.status === 0)
    await run(path.join(bin, "pg_ctl"), ["-D", dir, "-m", "fast", "-w", "stop"], user);

  // A free port may be taken before the server binds it: then try another. A port asked for is
  // tried once.
  for (let attempt = options.port ? 3 : 1; ; attempt++) {
    const [port] = options.port ? [options.port] : ((await freePorts(1)) as [number]);
    try {
      await run(
        path.join(bin, "pg_ctl"),
        ["-D", dir, "-l", logFile, "-w", "-t", "60", "-o", `-p ${port}`, "start"],
        user,
      );
    } catch (error) {
      const log = existsSync(logFile) ? readFileSync(logFile, "utf8") : "";
      if (attempt < 3 && /could not bind|Address already in use/.test(log)) continue;
      throw new Error(`${(error as Error).message}\n${log.split("\n").slice(-10).join("\n")}`);
    }
    return running(bin, dir, port, logFile, user);
  }
}

function running(
  bin: string,
  dir: string,
  port: number,
  logFile: string,
  user: { uid: number; gid: number } | undefined,
): LocalPostgres {
  const pgCtl = path.join(bin, "pg_ctl");
  // Should this process end without stop() (a crash, a failed test run), the server goes too.
  const lastResort = () => {
    spawnSync(pgCtl, ["-D", dir, "-m", "immediate", "stop"], { stdio: "ignore", ...user });
  };
  process.once("exit", lastResort);
  const version = readFileSync(path.join(dir, "PG_VERSION"), "utf8").trim();
  const url = (database = "postgres") => `postgres://postgres@127.0.0.1:${port}/${database}`;
  let stopped: Promise<void> | undefined;
  return {
    port,
    dir,
    logFile,
    version: serverVersion(bin) ?? version,
    pid() {
      try {
        return Number.parseInt(readFileSync(path.join(dir, "postmaster.pid"), "utf8"), 10);
      } catch {
        return undefined;
      }
    },
    url,
    async createDatabase(name, template) {
      const admin = knex({
        client: "pg",
        connection: { connectionString: url(), ...tlsOf(dir) },
        pool: { min: 0, max: 1 },
      });
      try {
        const { rows } = await admin.raw("select 1 from pg_database where datname = ?", [name]);
        if (rows.length > 0) return;
        await admin.raw(
          template ? "create database ?? template ??" : "create database ??",
          template ? [name, template] : [name],
        );
      } finally {
        await admin.destroy();
      }
    },
    async restart() {
      await run(
        pgCtl,
        ["-D", dir, "-l", logFile, "-m", "fast", "-w", "-t", "60", "-o", `-p ${port}`, "restart"],
        user,
      );
    },
    stop() {
      stopped ??= (async () => {
        process.off("exit", lastResort);
        await run(pgCtl, ["-D", dir, "-m", "fast", "-w", "stop"], user);
      })();
      return stopped;
    },
  };
}

/** The TLS settings a client needs for a server started with `tls`: its certificate as the CA. */
function tlsOf(dir: string) {
  const crt = path.join(dir, "server.crt");
  return existsSync(crt) ? { ssl: { ca: readFileSync(crt, "utf8") } } : {};
}

function serverVersion(bin: string): string | undefined {
  const { stdout } = spawnSync(path.join(bin, "postgres"), ["--version"], { encoding: "utf8" });
  return /(\d+\.\d+)/.exec(stdout ?? "")?.[1];
}

/**
 * Where a launch keeps its cluster: `<dataDir>/postgres`, or, when the server's user cannot reach
 * that (a data directory under root's home, say), a folder of its own under the system's temporary
 * folder, named after the data directory so that the next launch finds it again.
 */
export function clusterDir(dataDir: string): string {
  const dir = path.join(path.resolve(dataDir), "postgres");
  const user = serverUser();
  if (!user || !blockedAt(dir, user)) return dir;
  const key = createHash("sha256").update(dir).digest("hex").slice(0, 12);
  return path.join(tmpdir(), `shopmesh-postgres-${key}`);
}

/**
 * The local server of a launch (`npm run mesh -- --postgres`, the benchmark): its cluster in
 * `<dataDir>/postgres`, a database `shop` holding every service's schema, stopped by the
 * supervisor after the services. Call it once the supervisor holds the data directory.
 */
export async function launchPostgres(
  supervisor: Supervisor,
  dataDir: string,
  options: Pick<LocalPostgresOptions, "throwaway" | "settings"> = {},
): Promise<{ server: LocalPostgres; url: string }> {
  const port = env.port("SHOP_POSTGRES_PORT", 0);
  const server = await startLocalPostgres({
    dir: clusterDir(dataDir),
    ...options,
    ...(port > 0 && { port }),
  });
  supervisor.afterStop(() => server.stop());
  await server.createDatabase("shop");
  return { server, url: server.url("shop") };
}
