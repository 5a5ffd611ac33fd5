// Envoy in front of the benchmark's single replicas: the repo's front-door config (envoyConfig),
// access log to a file, hot restart off. Unlike test/helpers/envoy.ts it keeps nothing in memory
// per request and exposes the pid, so its CPU and memory can be measured.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream } from "node:fs";
import { writeFile } from "node:fs/promises";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  DEFAULT_DESCRIPTOR_FILE,
  type Endpoint,
  envoyConfig,
  loadDescriptorServices,
} from "../../deploy/envoy/config.js";

export interface BenchEnvoy {
  pid: number;
  /** `127.0.0.1:<port>` of the listener. */
  address: string;
  stop(): Promise<void>;
}

export interface BenchEnvoyOptions {
  binary: string;
  /** Replicas per cluster; every cluster of the descriptor must be present. */
  services: Record<string, readonly Endpoint[]>;
  listenPort: number;
  adminPort: number;
  /** Worker threads (--concurrency). */
  concurrency: number;
  /** Holds the config, the access log and Envoy's own log. */
  dir: string;
  cwd: string;
}

/** Starts Envoy and resolves once every upstream passes its gRPC health check. */
export async function startBenchEnvoy(options: BenchEnvoyOptions): Promise<BenchEnvoy> {
  const services = loadDescriptorServices(DEFAULT_DESCRIPTOR_FILE);
  const config = envoyConfig(
    {
      listen: { address: "127.0.0.1", port: options.listenPort },
      admin: { address: "127.0.0.1", port: options.adminPort },
      descriptorPath: DEFAULT_DESCRIPTOR_FILE,
      services: options.services,
      // The JSON access log of every call stays on: it is part of the real front door.
      accessLogPath: path.join(options.dir, "envoy-access.log"),
      healthCheckIntervalMs: 1_000,
    },
    services,
  );
  const configFile = path.join(options.dir, "envoy.json");
  await writeFile(configFile, JSON.stringify(config, null, 2));
  const log = createWriteStream(path.join(options.dir, "envoy.log"));
  const child: ChildProcess = spawn(
    options.binary,
    [
      ...["-c", configFile],
      "--disable-hot-restart",
      ...["--concurrency", String(options.concurrency)],
      ...["--log-level", "warn"],
    ],
    { cwd: options.cwd, stdio: ["ignore", "pipe", "pipe"] },
  );
  child.stdout?.pipe(log);
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const stop = async () => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    const exited = once(child, "exit");
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), 5_000);
    await exited;
    clearTimeout(killer);
  };

  const deadline = Date.now() + 30_000;
  const admin = `http://127.0.0.1:${options.adminPort}`;
  try {
    for (;;) {
      if (child.exitCode !== null) throw new Error(`envoy exited (${child.exitCode}): ${stderr}`);
      if (Date.now() > deadline) throw new Error(`envoy: upstreams not healthy in 30 s: ${stderr}`);
      const clusters = await fetch(`${admin}/clusters`)
        .then((response) => (response.ok ? response.text() : ""))
        .catch(() => "");
      // One `<cluster>::<host:port>::health_flags::<flags>` line per endpoint.
      const flags = clusters
        .split("\n")
        .filter((line) => line.includes("::health_flags::"))
        .map((line) => line.slice(line.lastIndexOf("::") + 2));
      if (flags.length > 0 && flags.every((flag) => flag === "healthy")) break;
      await sleep(100);
    }
  } catch (error) {
    await stop();
    throw error;
  }
  return { pid: child.pid as number, address: `127.0.0.1:${options.listenPort}`, stop };
}
