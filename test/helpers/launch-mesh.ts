// Runs the real `npm run mesh` launcher (scripts/mesh.ts) as a child process: Envoy and two
// replicas of each service, all on free ports, with a temp data directory of its own, and waits for
// the ready banner. The plan is built from the same environment, so a test knows every address.
//
//   const mesh = await startMeshLauncher({ args: ["--no-seed"] });   // in test.before
//   mesh.envoy;                  // 127.0.0.1:<listener port>: gRPC, gRPC-Web and REST
//   mesh.plan.addresses.user;    // ["127.0.0.1:<replica 1>", "127.0.0.1:<replica 2>"]
//   await mesh.stop();           // in test.after.always: Ctrl-C, then the exit code
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePorts } from "../../scripts/lib/launcher.js";
import { type MeshPlan, meshPlan } from "../../scripts/lib/mesh.js";
import {
  awaitBanner,
  HOST,
  type ScriptOptions,
  type ScriptProcess,
  spawnScript,
} from "./launch.js";

export interface MeshLauncher extends ScriptProcess {
  plan: MeshPlan;
  /** `127.0.0.1:<port>` of Envoy's listener. */
  envoy: string;
  banner: string;
  /**
   * Ctrl-C, as a user would, and the exit code; after 20 s the launcher and everything it started
   * are killed and stop() rejects. The data directory is removed either way. Safe to call twice.
   */
  stop(): Promise<number | null>;
}

export interface MeshLauncherOptions extends Omit<ScriptOptions, "dataDir"> {
  /** Replicas per service (SHOP_MESH_REPLICAS); 2, as `npm run mesh`, by default. */
  replicas?: number;
  /** How long to wait for the banner. */
  readyTimeoutMs?: number;
}

/** Starts `npm run mesh` on free ports and waits for its banner. The caller must call stop(). */
export async function startMeshLauncher(options: MeshLauncherOptions = {}): Promise<MeshLauncher> {
  const replicas = options.replicas ?? 2;
  const ports = (await freePorts(3 * replicas + 2)).map(String);
  const take = (n: number) => ports.splice(0, n).join(",");
  const dataDir = await mkdtemp(path.join(tmpdir(), "shopmesh-mesh-"));
  const env = {
    SHOP_MESH_REPLICAS: String(replicas),
    SHOP_USER_PORTS: take(replicas),
    SHOP_PRODUCT_PORTS: take(replicas),
    SHOP_ORDER_PORTS: take(replicas),
    SHOP_ENVOY_PORT: take(1),
    SHOP_ENVOY_ADMIN_PORT: take(1),
    ...options.env,
  };
  const plan = meshPlan({ ...process.env, SHOP_DATA_DIR: dataDir, ...env });
  const removeData = () => rm(dataDir, { recursive: true, force: true });
  const proc = await spawnScript(path.join("scripts", "mesh.ts"), {
    dataDir,
    env,
    ...(options.args && { args: options.args }),
  });
  try {
    const { banner, stop } = await awaitBanner(
      proc,
      "Ctrl-C stops everything.\n",
      options.readyTimeoutMs,
    );
    return {
      ...proc,
      plan,
      envoy: `${HOST}:${plan.envoy.port}`,
      banner,
      stop: () => stop().finally(removeData),
    };
  } catch (error) {
    await removeData();
    throw error;
  }
}
