// The one way tests launch: the real `npm start` (scripts/start.ts) or `npm run mesh`
// (scripts/mesh.ts) as a child process on free ports with a data directory of its own, waiting for
// its ready banner. The plan is built from the same environment, so a test knows every address.
// The services run compiled (SHOP_BUILD_DIR, test/helpers/build.ts) unless `runtime: "tsx"`.
//
//   const shop = await launch(t, "start");      // stopped (SIGINT) by t.teardown, which checks
//   shop.addresses.user; shop.banner;           //   the exit code and that every port is free
//   const mesh = await startLaunch("mesh", { args: ["--no-seed"] });   // in test.before
//   mesh.envoy; mesh.plan.addresses.user;       // 127.0.0.1:<port> of Envoy and of each replica
//   await mesh.stop();                          // in test.after.always
import { type ChildProcess, spawn } from "node:child_process";
import { readFileSync, rmSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { createConnection } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import type { ExecutionContext } from "ava";
import { serviceVariable } from "../../kit/registry.js";
import { MESH_BANNER_END, READY, START_BANNER_END } from "../../scripts/lib/banner.js";
import { type Runtime, repoRoot } from "../../scripts/lib/launcher.js";
import { type FleetPlan, freePortEnv, HOST, meshPlan, startPlan } from "../../scripts/lib/plan.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { servicesBuild } from "./build.js";

export { HOST };

/** Which launcher: `npm start` or `npm run mesh`. */
export type LaunchKind = "start" | "mesh";

const SCRIPTS: Record<LaunchKind, { script: string; end: string }> = {
  start: { script: path.join("scripts", "start.ts"), end: START_BANNER_END },
  mesh: { script: path.join("scripts", "mesh.ts"), end: MESH_BANNER_END },
};

export interface LaunchOptions {
  /** Data directory (SHOP_DATA_DIR); a fresh temp dir, removed afterwards, when left out. */
  dataDir?: string;
  /** Extra arguments for the script, e.g. ["--no-seed"]. */
  args?: readonly string[];
  /** Extra environment, e.g. { SHOP_SEED: "false" }. */
  env?: Record<string, string>;
  /** Ports to use for replica 1 of some services; free ones are picked for the rest. */
  ports?: Partial<Record<ServiceName, number>>;
  /** Replicas per service for the mesh (SHOP_MESH_REPLICAS); 2, as `npm run mesh`, by default. */
  replicas?: number;
  /**
   * How the launcher runs the services: compiled (test/helpers/build.ts) by default, or their
   * TypeScript through tsx, as `npm start` does unless SHOP_BUILD_DIR is set.
   */
  runtime?: Runtime;
}

export interface ExitStatus {
  code: number | null;
  signal: NodeJS.Signals | null;
}

/** A launcher process that may or may not come up. */
export interface LaunchProcess {
  kind: LaunchKind;
  child: ChildProcess;
  dataDir: string;
  /** What the launcher runs, from the same environment. */
  plan: FleetPlan;
  /** Replica 1 of each service. */
  ports: Record<ServiceName, number>;
  addresses: Record<ServiceName, string>;
  /** stdout and stderr so far, interleaved as they arrived. */
  output(): string;
  /** Resolves when the launcher process has exited (and its data dir, if ours, is removed). */
  exited: Promise<ExitStatus>;
  /** SIGKILLs the launcher and the processes it started, if still running. */
  kill(): Promise<void>;
}

export interface Launch extends LaunchProcess {
  /** The ready banner, from "shopmesh is ready" to its last line. */
  banner: string;
  /** `127.0.0.1:<port>` of Envoy's listener, for the mesh. */
  envoy?: string;
  /**
   * Sends SIGINT (Ctrl-C), waits for the launcher to exit and returns its exit code (null when a
   * signal killed it). Safe to call more than once. If the launcher outlives 20 s it and the
   * processes it started are killed and stop() rejects.
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

/** Direct children of a process (Linux): a launcher's replicas and Envoy. */
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
 * them (a crashed test file, an AVA timeout): kill the launcher and what it started.
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

/**
 * Spawns a launcher on free ports and returns at once, without waiting for its banner: for
 * launches expected to fail. The caller must await `exited` or kill it; prefer launch().
 */
export async function spawnLaunch(
  kind: LaunchKind,
  options: LaunchOptions = {},
): Promise<LaunchProcess> {
  const replicas = kind === "mesh" ? (options.replicas ?? 2) : 1;
  const env: Record<string, string> = {
    ...(await freePortEnv(replicas, kind === "mesh")),
    ...(kind === "mesh" && { SHOP_MESH_REPLICAS: String(replicas) }),
  };
  for (const [name, port] of Object.entries(options.ports ?? {})) {
    env[serviceVariable(name, "PORTS")] = String(port);
  }
  if (options.runtime !== "tsx") env.SHOP_BUILD_DIR = await servicesBuild();
  Object.assign(env, options.env);
  const dataDir = options.dataDir ?? (await mkdtemp(path.join(tmpdir(), `shopmesh-${kind}-`)));
  env.SHOP_DATA_DIR = dataDir;
  const plan = (kind === "mesh" ? meshPlan : startPlan)({ ...process.env, ...env });

  const child = spawn(
    process.execPath,
    ["--import", "tsx", SCRIPTS[kind].script, ...(options.args ?? [])],
    { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
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
    const started = child.pid === undefined ? [] : childPids(child.pid);
    child.kill("SIGKILL");
    for (const pid of started) if (alive(pid)) process.kill(pid, "SIGKILL");
    await exited.catch(() => {});
  };
  const first = (name: ServiceName) => plan.replicas.find((r) => r.service === name);
  const names = registry.names;
  return {
    kind,
    child,
    dataDir,
    plan,
    ports: Object.fromEntries(names.map((n) => [n, first(n)?.port])) as Record<ServiceName, number>,
    addresses: Object.fromEntries(names.map((n) => [n, plan.addresses[n][0]])) as Record<
      ServiceName,
      string
    >,
    output: () => output,
    exited,
    kill,
  };
}

/**
 * Waits for a launcher's ready banner and returns it with the launcher's stop(). If no banner
 * comes, the launcher is stopped and the wait rejects.
 */
async function awaitBanner(proc: LaunchProcess, timeoutMs: number): Promise<Launch> {
  const { child, exited } = proc;
  const end = `${SCRIPTS[proc.kind].end}\n`;
  let stopped: Promise<number | null> | undefined;
  const stop = (graceMs = 20_000): Promise<number | null> => {
    stopped ??= (async () => {
      if (child.exitCode !== null || child.signalCode !== null) return (await exited).code;
      const started = child.pid === undefined ? [] : childPids(child.pid);
      child.kill("SIGINT");
      let timer: NodeJS.Timeout | undefined;
      const timedOut = new Promise<"timeout">((resolve) => {
        timer = setTimeout(() => resolve("timeout"), graceMs);
      });
      const result = await Promise.race([exited, timedOut]);
      clearTimeout(timer);
      if (result === "timeout") {
        child.kill("SIGKILL");
        for (const pid of started) if (alive(pid)) process.kill(pid, "SIGKILL");
        await exited;
        throw new Error(
          `the launcher did not exit within ${graceMs} ms of SIGINT; killed it and what it started\n${proc.output()}`,
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
    // After the launch's own listener (registered first), so the output already holds the chunk.
    child.stdout?.on("data", check);
    child.once("close", onExit);
    check();
  }).catch(async (error: unknown) => {
    await stop().catch(() => {});
    throw error;
  });
  return {
    ...proc,
    banner,
    ...(proc.plan.envoy && { envoy: `${HOST}:${proc.plan.envoy.port}` }),
    stop: () => stop(),
  };
}

/**
 * Starts a launcher and waits for its banner. The caller must call stop(). A launch on ports this
 * helper picked is tried again on others when one of them was taken before the launch bound it:
 * another test file's launch, picking at random from the same range, can take the same port.
 */
export async function startLaunch(kind: LaunchKind, options: LaunchOptions = {}): Promise<Launch> {
  const picked =
    options.ports === undefined &&
    !Object.keys(options.env ?? {}).some((name) => /_PORTS?$/.test(name));
  for (let attempt = 1; ; attempt++) {
    try {
      return await awaitBanner(await spawnLaunch(kind, options), 90_000);
    } catch (error) {
      const taken = /EADDRINUSE|address already in use/i.test(String(error));
      if (!picked || !taken || attempt === 3) throw error;
    }
  }
}

/**
 * Starts a launcher for one test. A teardown stops it with SIGINT and fails the test unless the
 * launcher exits 0 and every port it used is closed afterwards.
 */
export async function launch(
  t: ExecutionContext,
  kind: LaunchKind,
  options: LaunchOptions = {},
): Promise<Launch> {
  const launched = await startLaunch(kind, options);
  t.teardown(async () => {
    const code = await launched.stop();
    if (code !== 0) {
      throw new Error(`the launcher exited with ${code} after SIGINT:\n${launched.output()}`);
    }
    const open = [];
    for (const replica of launched.plan.replicas) {
      if (await isListening(replica.port)) open.push(`${replica.name} :${replica.port}`);
    }
    if (open.length > 0) throw new Error(`still listening after stop: ${open.join(", ")}`);
  });
  return launched;
}
