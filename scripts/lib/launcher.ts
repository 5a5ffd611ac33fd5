import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream, mkdirSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { HealthCheckResponse_ServingStatus, HealthService } from "../../gen/ts/health/v1/health.js";
import { createClient } from "../../kit/client.js";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

export const SERVICES = {
  user: "shop.user.v1.UserService",
  product: "shop.product.v1.ProductService",
  order: "shop.order.v1.OrderService",
} as const;

export type ServiceKind = keyof typeof SERVICES;

/** One service process to run. */
export interface ProcessSpec {
  /** Label in progress lines and the log file name, for example "user" or "order-2". */
  name: string;
  service: ServiceKind;
  host: string;
  port: number;
  /** Extra SHOP_* settings: database, dependency addresses. */
  env?: Record<string, string>;
}

export interface RunningProcess {
  spec: ProcessSpec;
  child: ChildProcess;
  address: string;
  logFile: string;
}

export class LaunchError extends Error {}

/** Starts a service process with its log going to logDir/<name>.log. */
export function spawnService(spec: ProcessSpec, logDir: string): RunningProcess {
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${spec.name}.log`);
  const log = createWriteStream(logFile, { flags: "a" });
  const child = spawn(
    process.execPath,
    ["--import", "tsx", path.join(repoRoot, "services", spec.service, "main.ts")],
    {
      cwd: repoRoot,
      env: { ...process.env, SHOP_HOST: spec.host, SHOP_PORT: String(spec.port), ...spec.env },
      stdio: ["ignore", "pipe", "pipe"],
    },
  );
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return { spec, child, address: `${spec.host}:${spec.port}`, logFile };
}

/** Resolves when the process reports SERVING; rejects, with its last words, if it exits first. */
export async function waitServing(proc: RunningProcess, timeoutMs = 30_000): Promise<void> {
  let stderr = "";
  proc.child.stderr?.on("data", (chunk) => {
    stderr = (stderr + chunk).slice(-2000);
  });
  const exited = once(proc.child, "exit").then(([code, signal]) => {
    const why = stderr.trim().split("\n").slice(-3).join("\n") || `exit ${code ?? signal}`;
    throw new LaunchError(`${proc.spec.name} failed to start: ${why} (log: ${proc.logFile})`);
  });
  const health = createClient(HealthService, proc.address, {
    serviceName: "grpc.health.v1.Health",
  });
  const deadline = Date.now() + timeoutMs;
  const serving = (async () => {
    while (Date.now() < deadline) {
      const status = await health
        .check({ service: SERVICES[proc.spec.service] }, { timeoutMs: 1_000 })
        .then((response) => response.status)
        .catch(() => undefined);
      if (status === HealthCheckResponse_ServingStatus.SERVING) return;
      if (proc.child.exitCode !== null || proc.child.signalCode !== null) await exited;
      await new Promise((resolve) => setTimeout(resolve, 150));
    }
    throw new LaunchError(`${proc.spec.name} did not report SERVING within ${timeoutMs} ms`);
  })();
  try {
    await Promise.race([serving, exited]);
  } finally {
    health.close();
    exited.catch(() => {});
  }
}

/** SIGTERM (graceful shutdown), then SIGKILL if the process outlives the grace period. */
export async function stopProcess(proc: RunningProcess, graceMs = 15_000): Promise<void> {
  const { child } = proc;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}
