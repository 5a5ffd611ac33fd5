import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { createWriteStream, mkdirSync } from "node:fs";
import { type AddressInfo, createServer, type Server } from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { HealthCheckResponse_ServingStatus, HealthService } from "../../gen/ts/health/v1/health.js";
import { createClient } from "../../kit/client.js";

export const repoRoot = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));

/** A project-local tool installed by scripts/tools.sh (`npm run tools`): grpcurl, ghz, envoy. */
export const tool = (name: string) => path.join(repoRoot, ".tools", "bin", name);

export const SERVICES = {
  user: "shop.user.v1.UserService",
  product: "shop.product.v1.ProductService",
  order: "shop.order.v1.OrderService",
} as const;

export type ServiceKind = keyof typeof SERVICES;

/** Where each service listens by default (`npm start`, and replica 1 of `npm run mesh`). */
export const DEFAULT_PORTS: Record<ServiceKind, number> = {
  user: 50051,
  product: 50052,
  order: 50053,
};

/** The service kinds, in start order. */
export const SERVICE_KINDS = Object.keys(SERVICES) as ServiceKind[];

/** A service kind named in configuration (SHOP_SERVICE), checked. */
export function serviceKind(value: string): ServiceKind {
  if (value in SERVICES) return value as ServiceKind;
  throw new Error(`SHOP_SERVICE must be one of ${SERVICE_KINDS.join(", ")}, got "${value}"`);
}

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

/** A child process whose stdout and stderr go to a log file. */
export interface LoggedProcess {
  name: string;
  child: ChildProcess;
  logFile: string;
}

export interface RunningProcess extends LoggedProcess {
  spec: ProcessSpec;
  address: string;
}

export class LaunchError extends Error {}

/** Starts `command` from the repo root with its output appended to logDir/<name>.log. */
export function spawnLogged(
  name: string,
  command: string,
  args: readonly string[],
  logDir: string,
  env: NodeJS.ProcessEnv = process.env,
): LoggedProcess {
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}.log`);
  const log = createWriteStream(logFile, { flags: "a" });
  const child = spawn(command, args, { cwd: repoRoot, env, stdio: ["ignore", "pipe", "pipe"] });
  child.stdout?.pipe(log);
  child.stderr?.pipe(log);
  return { name, child, logFile };
}

/** Starts a service process with its log going to logDir/<name>.log. */
export function spawnService(spec: ProcessSpec, logDir: string): RunningProcess {
  const proc = spawnLogged(
    spec.name,
    process.execPath,
    ["--import", "tsx", path.join(repoRoot, "services", spec.service, "main.ts")],
    logDir,
    { ...process.env, SHOP_HOST: spec.host, SHOP_PORT: String(spec.port), ...spec.env },
  );
  return { ...proc, spec, address: `${spec.host}:${spec.port}` };
}

/** One grpc.health.v1 Check of a service's full name: true when it answers SERVING. */
export async function checkServing(
  address: string,
  service: ServiceKind,
  timeoutMs = 1_000,
): Promise<boolean> {
  const health = createClient(HealthService, address, { serviceName: "grpc.health.v1.Health" });
  try {
    const { status } = await health.check({ service: SERVICES[service] }, { timeoutMs });
    return status === HealthCheckResponse_ServingStatus.SERVING;
  } catch {
    return false;
  } finally {
    health.close();
  }
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
export async function stopProcess(
  proc: Pick<LoggedProcess, "child">,
  graceMs = 15_000,
): Promise<void> {
  const { child } = proc;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(timer);
}

/** TCP ports on `host` that were free a moment ago: bound on port 0, then released. */
export async function freePorts(count: number, host = "127.0.0.1"): Promise<number[]> {
  const servers: Server[] = [];
  try {
    for (let i = 0; i < count; i++) {
      const server = createServer().listen(0, host);
      servers.push(server);
      await once(server, "listening");
    }
    return servers.map((server) => (server.address() as AddressInfo).port);
  } finally {
    await Promise.all(
      servers.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))),
    );
  }
}

/**
 * Fails with a LaunchError naming the first port on `host` that something already listens on, so
 * a launcher never mistakes another process (a running `npm start`, say) for its own.
 */
export async function assertPortsFree(
  host: string,
  ports: Record<string, number>,
  hint: string,
): Promise<void> {
  for (const [what, port] of Object.entries(ports)) {
    const server = createServer();
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once("error", resolve);
      server.listen(port, host, () => resolve(undefined));
    });
    if (!error) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      continue;
    }
    const reason = error.code === "EADDRINUSE" ? "is in use" : `cannot be bound (${error.code})`;
    throw new LaunchError(`${host}:${port} (${what}) ${reason}; ${hint}`);
  }
}
