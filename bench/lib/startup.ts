// How fast a service process starts and how much memory it holds when idle: compiled JavaScript
// on node (what the image runs) next to the TypeScript sources through tsx (what `npm start`
// runs). A start is timed from spawn to the first grpc.health.v1 answer SERVING for the
// service's proto service; idle RSS is read from /proc after it has served nothing for a while.
import { fork } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { HealthCheckResponse_ServingStatus, HealthService } from "../../gen/ts/health/v1/health.js";
import { createClient } from "../../kit/client/index.js";
import { serviceVariable } from "../../kit/registry.js";
import {
  envFor,
  execArgvFor,
  mainFor,
  type Runtime,
  repoRoot,
} from "../../scripts/lib/launcher.js";
import { freePorts } from "../../scripts/lib/ports.js";
import { registry } from "../../services/registry.js";
import { sampleProcess } from "./proc.js";
import { median } from "./stats.js";

export type { Runtime };

export interface StartupResult {
  service: string;
  runtime: Runtime;
  /** Starts measured; the first of each service (its database is created) is not counted. */
  starts: number;
  /** Spawn to SERVING, median and slowest of the starts, in ms. */
  servingMs: { median: number; max: number };
  /** RSS after `idleS` seconds with no calls, median of the starts, in MB (10^6 bytes). */
  idleRssMb: number;
  /** The anonymous part of idleRssMb (see ProcSample.anonRssKb), median of the starts, in MB. */
  idleAnonMb: number;
  idleS: number;
}

/** One start: spawn, SERVING, idle, SIGTERM. */
async function startOnce(
  runtime: Runtime,
  service: string,
  dataDir: string,
  idleS: number,
  env: Record<string, string>,
): Promise<{ servingMs: number; rssMb: number; anonMb: number }> {
  const [port, ...others] = await freePorts(1 + registry.names.length);
  const registered = registry.get(service);
  const dependencies = Object.fromEntries(
    registered.dependencies.map((dependency, i) => [
      serviceVariable(dependency, "ADDR"),
      `127.0.0.1:${others[i]}`,
    ]),
  );
  const started = performance.now();
  const child = fork(mainFor(runtime), [], {
    cwd: repoRoot,
    execArgv: execArgvFor(runtime),
    env: {
      ...envFor(runtime),
      ...process.env,
      ...env,
      ...dependencies,
      SHOP_SERVICE: service,
      SHOP_PORT: String(port),
      // Any free one: the port + 1000 it would derive is nobody's to keep free meanwhile.
      SHOP_METRICS_PORT: "0",
      SHOP_DATA_DIR: dataDir,
      SHOP_LOG_LEVEL: "warn",
    },
    stdio: ["ignore", "ignore", "inherit", "ipc"],
  });
  try {
    // The process says when it is bound; the health answer is what a probe would see.
    const [message] = (await Promise.race([
      once(child, "message"),
      once(child, "exit").then(([code]) => {
        throw new Error(`${service} (${runtime}) exited with ${code} before serving`);
      }),
    ])) as [{ serving: string }];
    const health = createClient(HealthService, message.serving);
    try {
      const { status } = await health.check(
        { service: registered.protoServices[0] as string },
        { timeoutMs: 5_000 },
      );
      if (status !== HealthCheckResponse_ServingStatus.SERVING) {
        throw new Error(`${service} (${runtime}) answered ${status}`);
      }
    } finally {
      health.close();
    }
    const servingMs = performance.now() - started;
    await new Promise((resolve) => setTimeout(resolve, idleS * 1000));
    const sample = sampleProcess(child.pid as number);
    if (!sample) throw new Error(`${service} (${runtime}) is gone`);
    return {
      servingMs,
      rssMb: (sample.rssKb * 1024) / 1e6,
      anonMb: (sample.anonRssKb * 1024) / 1e6,
    };
  } finally {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill("SIGTERM");
      await once(child, "exit");
    }
  }
}

/**
 * Starts every registered service `starts` times per runtime, one process at a time. Compiled
 * JavaScript must be built first (`npm run build`). `env` is added to every process's.
 */
export async function measureStartup(options: {
  starts: number;
  idleS: number;
  runtimes?: readonly Runtime[];
  env?: Record<string, string>;
}): Promise<StartupResult[]> {
  const results: StartupResult[] = [];
  const dataDir = await mkdtemp(path.join(os.tmpdir(), "shopmesh-startup-"));
  try {
    for (const runtime of options.runtimes ?? (["compiled", "tsx"] as const)) {
      for (const service of registry.names) {
        // Creates and migrates the database, and warms the file cache: not counted.
        await startOnce(runtime, service, dataDir, 0, options.env ?? {});
        const samples = [];
        for (let i = 0; i < options.starts; i++) {
          samples.push(
            await startOnce(runtime, service, dataDir, options.idleS, options.env ?? {}),
          );
        }
        const serving = samples.map((sample) => sample.servingMs);
        results.push({
          service,
          runtime,
          starts: samples.length,
          servingMs: { median: median(serving), max: Math.max(...serving) },
          idleRssMb: median(samples.map((sample) => sample.rssMb)),
          idleAnonMb: median(samples.map((sample) => sample.anonMb)),
          idleS: options.idleS,
        });
      }
    }
  } finally {
    await rm(dataDir, { recursive: true, force: true });
  }
  return results;
}
