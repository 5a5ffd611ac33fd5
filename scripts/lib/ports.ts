// Free loopback ports for the processes a launch starts, and a lease on each one handed out, so
// that two launches on one machine (test files side by side, a bench beside them) never pick the
// same port, even while a replica is down for a restart and its port looks free.
import { readFileSync } from "node:fs";
import { mkdir, readdir, rm, stat, writeFile } from "node:fs/promises";
import { type AddressInfo, createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

/** Where the leases are: a file per port, named after it, holding the pid that took it. */
const LEASES = path.join(tmpdir(), "shopmesh-port-leases");
/** How long a port stays leased: longer than a test or a bench may restart a replica on it. */
const LEASE_MS = 30 * 60_000;

/** The lowest port the kernel hands out for port 0 and for outgoing connections. */
function ephemeralLow(): number | undefined {
  try {
    const low = Number(
      readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").split(/\s+/)[0],
    );
    return low > 20_000 ? low : undefined;
  } catch {
    return undefined;
  }
}

let pruned: Promise<void> | undefined;

/** Once per process: the leases directory exists, and leases past their time are gone. */
function prune(): Promise<void> {
  pruned ??= (async () => {
    await mkdir(LEASES, { recursive: true });
    const now = Date.now();
    for (const name of await readdir(LEASES)) {
      const file = path.join(LEASES, name);
      const { mtimeMs } = await stat(file).catch(() => ({ mtimeMs: now }));
      if (now - mtimeMs > LEASE_MS) await rm(file, { force: true });
    }
  })().catch(() => {}); // another user's directory: its leases are still read
  return pruned;
}

/** The file that holds `port`'s lease. */
export const leaseFile = (port: number) => path.join(LEASES, String(port));

/**
 * Takes the lease on `port`; false while someone else's lease on it lasts. Where no lease can be
 * written (a directory another user made), the port is taken unleased, as before leases.
 */
export async function leasePort(port: number): Promise<boolean> {
  await prune();
  const file = leaseFile(port);
  const held = await stat(file).catch(() => undefined);
  if (held && Date.now() - held.mtimeMs <= LEASE_MS) return false;
  if (held) await rm(file, { force: true }).catch(() => {});
  return writeFile(file, String(process.pid), { flag: "wx" }).then(
    () => true,
    (error: NodeJS.ErrnoException) => error.code !== "EEXIST",
  );
}

/**
 * TCP ports on `host` that were free a moment ago (bound, then released) and are leased to the
 * caller for 30 minutes. They come from below the kernel's ephemeral range when it is known, at
 * random: a port the kernel picked for port 0 may be given to an outgoing connection (to a
 * database, say) before its launch binds it, and then the launch fails with EADDRINUSE.
 */
export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  const low = ephemeralLow();
  const servers: Server[] = [];
  const listen = (port: number) =>
    new Promise<Server | undefined>((resolve) => {
      const server = createServer();
      server.once("error", () => resolve(undefined));
      server.listen(port, host, () => resolve(server));
    });
  try {
    for (let tries = 1; servers.length < count; tries++) {
      if (tries > 20_000) throw new Error(`no ${count} free ports on ${host}`);
      const port = low ? 15_000 + Math.floor(Math.random() * (low - 15_000)) : 0;
      if (low && !(await leasePort(port))) continue;
      const server = await listen(port);
      if (server) servers.push(server);
    }
    return servers.map((server) => (server.address() as AddressInfo).port);
  } finally {
    await Promise.all(
      servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  }
}
