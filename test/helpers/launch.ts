// Runs the real `npm start` launcher (scripts/start.ts) as a child process on free ports with its
// own data directory, and waits for its ready banner. spawnScript and awaitBanner do the same for
// any launcher (test/mesh.test.ts runs scripts/mesh.ts with them).
//
//   const shop = await launch(t);            // stopped (SIGINT) by t.teardown
//   shop.ports.user; shop.banner;            // 127.0.0.1:<port>, the printed banner
//   t.is(await shop.stop(), 0);              // or let the teardown stop it and check the code
//
// In hooks (test.before), where t.teardown is not allowed, use startLauncher() and call stop() in
// test.after.always.
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { ExecutionContext } from "ava";
import { freePorts, repoRoot } from "../../scripts/lib/launcher.js";

export const HOST = "127.0.0.1";

export interface LauncherPorts {
  user: number;
  product: number;
  order: number;
}

export interface LauncherOptions extends ScriptOptions {
  /** Ports to use; free ones are picked for those left out. */
  ports?: Partial<LauncherPorts>;
  /** How long to wait for the banner. */
  readyTimeoutMs?: number;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface LauncherProcess {
  child: ChildProcess;
  ports: LauncherPorts;
  dataDir: string;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  /** Resolves when the launcher process has exited. */
  exited: Promise<ExitStatus>;
  /** SIGKILLs the launcher and the service processes it started, if still running. */
  kill(): Promise<void>;
}

export interface Launcher extends LauncherProcess {
  /** `127.0.0.1:<port>` per service. */
  addresses: Record<keyof LauncherPorts, string>;
  /** The ready banner, from "shopmesh is ready" to "Ctrl-C stops all three.". */
  banner: string;
  /**
   * Sends SIGINT (Ctrl-C), waits for the launcher to exit and returns its exit code (null when a
   * signal killed it). Safe to call more than once. If the launcher outlives the grace period it
   * and the service processes it started are killed and stop() rejects.
   */
  stop(): Promise<number | null>;
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function isListening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = createConnection({ host: HOST, port });
    socket.setTimeout(2_000);
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("timeout", () => {
      socket.destroy();
      resolve(false);
    });
    socket.once("error", () => resolve(false));
  });
}

/** Direct children of a process (Linux): the launcher's service processes. */
export function childPids(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8")
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/** True while a process with this id exists. */
export function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

/**
 * Launchers still running, for a last-ditch cleanup when the test process exits without stopping
 * them (a crashed test file, an AVA timeout): SIGTERM their services (graceful shutdown) and kill
 * the launcher, whose stdout has no reader any more.
 */
const live = new Map<ChildProcess, string | undefined>();
process.once("exit", () => {
  for (const [child, tempDir] of live) {
    if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) continue;
    for (const pid of childPids(child.pid)) if (alive(pid)) process.kill(pid, "SIGTERM");
    child.kill("SIGKILL");
    if (tempDir) rmSync(tempDir, { recursive: true, force: true });
  }
});

export interface ScriptOptions {
  /** Data directory (SHOP_DATA_DIR); a fresh temp dir, removed afterwards, when left out. */
  dataDir?: string;
  /** Extra arguments for the script, e.g. ["--no-seed"]. */
  args?: readonly string[];
  /** Extra environment, e.g. { SHOP_SEED: "false" }. */
  env?: Record<string, string>;
}

export type ScriptProcess = Omit<LauncherProcess, "ports">;

/**
 * Spawns `node --import tsx <script>` (a launcher such as scripts/start.ts or scripts/mesh.ts,
 * relative to the repo root, which is its cwd) and returns at once, without waiting for its
 * banner. The caller must await `exited` or kill the child.
 */
export async function spawnScript(
  script: string,
  options: ScriptOptions = {},
): Promise<ScriptProcess> {
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(tmpdir(), "shopmesh-launch-")));
  const child = spawn(process.execPath, ["--import", "tsx", script, ...(options.args ?? [])], {
    cwd: repoRoot,
    env: { ...process.env, SHOP_DATA_DIR: dataDir, ...options.env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let output = "";
  const append = (chunk: Buffer) => {
    output += chunk;
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);
  const ownDir = options.dataDir === undefined;
  live.set(child, ownDir ? dataDir : undefined);
  const exited = new Promise<ExitStatus>((resolve, reject) => {
    child.once("error", reject);
    // "close", not "exit": by then stdout and stderr have been read to the end.
    child.once("close", (code, signal) => resolve({ code, signal }));
  }).finally(async () => {
    live.delete(child);
    if (ownDir) await rm(dataDir, { recursive: true, force: true });
  });
  exited.catch(() => {});
  const kill = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const services = child.pid === undefined ? [] : childPids(child.pid);
    child.kill("SIGKILL");
    for (const pid of services) if (alive(pid)) process.kill(pid, "SIGKILL");
    await exited.catch(() => {});
  };
  return { child, dataDir, output: () => output, exited, kill };
}

/**
 * Spawns `node --import tsx scripts/start.ts` on free ports and returns at once, without waiting
 * for the banner: for launches that are expected to fail. The caller must await `exited` or kill
 * the child; prefer launch() for launches that should come up.
 */
export async function spawnLauncher(options: LauncherOptions = {}): Promise<LauncherProcess> {
  const [user, product, order] = await freePorts(3);
  const ports: LauncherPorts = {
    user: options.ports?.user ?? (user as number),
    product: options.ports?.product ?? (product as number),
    order: options.ports?.order ?? (order as number),
  };
  const proc = await spawnScript(path.join("scripts", "start.ts"), {
    ...options,
    env: {
      SHOP_USER_PORT: String(ports.user),
      SHOP_PRODUCT_PORT: String(ports.product),
      SHOP_ORDER_PORT: String(ports.order),
      ...options.env,
    },
  });
  return { ...proc, ports };
}

const READY = "shopmesh is ready";

/**
 * Waits for a launcher's ready banner, from "shopmesh is ready" to the line `end`, and returns it
 * with the launcher's stop(): SIGINT (Ctrl-C), then the exit code (null when a signal killed it).
 * If the launcher outlives the grace period it and the processes it started are killed and stop()
 * rejects. If no banner comes, the launcher is stopped and the wait rejects.
 */
export async function awaitBanner(
  proc: ScriptProcess,
  end: string,
  timeoutMs = 90_000,
): Promise<{ banner: string; stop(): Promise<number | null> }> {
  const { child, exited } = proc;
  let stopped: Promise<number | null> | undefined;
  const stop = (graceMs = 20_000): Promise<number | null> => {
    stopped ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) {
        return (await exited).code;
      }
      const services = child.pid === undefined ? [] : childPids(child.pid);
      child.kill("SIGINT");
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), graceMs);
      });
      const result = await Promise.race([exited, timedOut]);
      clearTimeout(timer);
      if (result === "timeout") {
        child.kill("SIGKILL");
        for (const pid of services) if (alive(pid)) process.kill(pid, "SIGKILL");
        await exited;
        throw new Error(
          `the launcher did not exit within ${graceMs} ms of SIGINT; killed it and its services\n${proc.output()}`,
        );
      }
      return result.code;
    })();
    return stopped;
  };

  /** The complete banner in the output, or undefined while it has not all arrived. */
  const findBanner = (output: string): string | undefined => {
    const start = output.indexOf(READY);
    const last = start < 0 ? -1 : output.indexOf(end, start);
    return last < 0 ? undefined : output.slice(start, last + end.length);
  };
  const banner = await new Promise<string>((resolve, reject) => {
    const check = () => {
      const found = findBanner(proc.output());
      if (found === undefined) return;
      cleanup();
      resolve(found);
    };
    const timer = setTimeout(() => {
      cleanup();
      reject(new Error(`no ready banner within ${timeoutMs} ms:\n${proc.output()}`));
    }, timeoutMs);
    const onExit = () => {
      cleanup();
      reject(new Error(`the launcher exited before its banner:\n${proc.output()}`));
    };
    const cleanup = () => {
      clearTimeout(timer);
      child.stdout?.off("data", check);
      child.off("close", onExit);
    };
    // After the helper's own listener (registered first), so the output already holds the chunk.
    child.stdout?.on("data", check);
    child.once("close", onExit);
    check();
  }).catch(async (error: unknown) => {
    await stop().catch(() => {});
    throw error;
  });
  return { banner, stop: () => stop() };
}

/** Starts the launcher and waits for its banner. The caller must call stop(). */
export async function startLauncher(options: LauncherOptions = {}): Promise<Launcher> {
  const proc = await spawnLauncher(options);
  const { banner, stop } = await awaitBanner(
    proc,
    "Ctrl-C stops all three.\n",
    options.readyTimeoutMs,
  );
  const address = (port: number) => `${HOST}:${port}`;
  return {
    ...proc,
    addresses: {
      user: address(proc.ports.user),
      product: address(proc.ports.product),
      order: address(proc.ports.order),
    },
    banner,
    stop,
  };
}

/**
 * Starts the launcher for one test. A teardown stops it with SIGINT and fails the test unless the
 * launcher exits 0 and all three ports are closed afterwards.
 */
export async function launch(
  t: ExecutionContext,
  options: LauncherOptions = {},
): Promise<Launcher> {
  const launcher = await startLauncher(options);
  t.teardown(async () => {
    const code = await launcher.stop();
    if (code !== 0) {
      throw new Error(`the launcher exited with ${code} after SIGINT:\n${launcher.output()}`);
    }
    const open = [];
    for (const [name, port] of Object.entries(launcher.ports)) {
      if (await isListening(port)) open.push(`${name} :${port}`);
    }
    if (open.length > 0) throw new Error(`still listening after stop: ${open.join(", ")}`);
  });
  return launcher;
}
