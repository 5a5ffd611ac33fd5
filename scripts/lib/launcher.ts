// Processes: start one with its output in a log file, start a service replica and wait until it
// says it serves, stop one gracefully. The supervisor (supervisor.ts) builds fleets from these.
import { type ChildProcess, fork, spawn } from "node:child_process";
import { once } from "node:events";
import { closeSync, createWriteStream, existsSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { fileURLToPath } from "node:url";
import { RUNTIME_ENV } from "../../deploy/settings.js";
import { HealthCheckResponse_ServingStatus, HealthService } from "../../gen/ts/health/v1/health.js";
import { createClient } from "../../kit/client/index.js";
import type { Migration } from "../../kit/db/index.js";
import { channelCredentials, readTls } from "../../kit/security/tls.js";
import { registry, type ServiceName } from "../../services/registry.js";

export const repoRoot = path.resolve(fileURLToPath(new URL("../..", import.meta.url)));

/** A project-local tool installed by scripts/tools.sh (`npm run tools`): grpcurl, ghz, envoy. */
export const tool = (name: string) => path.join(repoRoot, ".tools", "bin", name);

/** How a service process runs: its TypeScript through tsx, or compiled JavaScript on node. */
export type Runtime = "tsx" | "compiled";

/**
 * A checkout of this project whose services the launcher runs: this one, or another build of it
 * (the bench's `--against` runs one beside this one).
 */
export interface Checkout {
  root: string;
  /** Its production image's environment (RUNTIME_ENV of its deploy/settings.ts). */
  runtimeEnv: Readonly<Record<string, string>>;
  /** Its services' migrations, which migrate its databases; this checkout's registry's if unset. */
  migrations?: Readonly<Record<ServiceName, readonly Migration[]>>;
  /** Where its compiled JavaScript is: `npm run build`'s <root>/dist unless set. */
  build?: string;
}

/** The checkout this code runs from. */
export const THIS_CHECKOUT: Checkout = { root: repoRoot, runtimeEnv: RUNTIME_ENV };

/**
 * The one entry point of every service process (services/main.ts), or the same compiled by
 * `npm run build`: what the production image runs.
 */
export const mainFor = (runtime: Runtime, checkout = THIS_CHECKOUT) =>
  runtime === "compiled"
    ? path.join(checkout.build ?? path.join(checkout.root, "dist"), "services", "main.js")
    : path.join(checkout.root, "services", "main.ts");

/**
 * How `npm start` and `npm run mesh` run the services: their TypeScript through tsx, or, with
 * SHOP_BUILD_DIR set, the JavaScript compiled into that folder (`npm run build` writes dist/), as
 * the image runs it. The tests run the services from a build of their own (test/helpers/build.ts).
 */
export function launcherRuntime(env: NodeJS.ProcessEnv = process.env): {
  runtime: Runtime;
  checkout: Checkout;
} {
  const build = env.SHOP_BUILD_DIR;
  if (!build) return { runtime: "tsx", checkout: THIS_CHECKOUT };
  const checkout = { ...THIS_CHECKOUT, build: path.resolve(build) };
  if (!existsSync(mainFor("compiled", checkout))) {
    throw new LaunchError(
      `SHOP_BUILD_DIR: no ${path.join(build, "services", "main.js")}; run \`npm run build\` first`,
    );
  }
  return { runtime: "compiled", checkout };
}

// Compiled code runs with the image's environment: its NODE_OPTIONS as Node's flags, so that a
// caller's own NODE_OPTIONS cannot replace them, and the rest as variables.

/** Node's flags for a runtime: tsx's loader, or the image's Node options for compiled code. */
export const execArgvFor = (runtime: Runtime, checkout = THIS_CHECKOUT) =>
  runtime === "tsx"
    ? ["--import", "tsx"]
    : (checkout.runtimeEnv.NODE_OPTIONS ?? "").split(" ").filter(Boolean);

/** What a runtime adds to a process's environment: the image's other variables, compiled. */
export const envFor = (runtime: Runtime, checkout = THIS_CHECKOUT): Record<string, string> => {
  if (runtime === "tsx") return {};
  const { NODE_OPTIONS: _flags, ...variables } = checkout.runtimeEnv;
  return variables;
};

/** A registered service named in configuration (SHOP_SERVICE), checked. */
export function serviceName(value: string): ServiceName {
  if ((registry.names as string[]).includes(value)) return value as ServiceName;
  throw new Error(`SHOP_SERVICE must be one of ${registry.names.join(", ")}, got "${value}"`);
}

/** One replica of a service to run. */
export interface ProcessSpec {
  /** Label in progress lines and the log file name, for example "user" or "order-2". */
  name: string;
  service: ServiceName;
  host: string;
  port: number;
  /** Where it serves its metrics (SHOP_METRICS_PORT); 0 for a free port it reports. */
  metricsPort?: number;
  /** Extra SHOP_* settings: database, dependency addresses. */
  env?: Record<string, string>;
  /** tsx unless set: compiled needs `npm run build` first. */
  runtime?: Runtime;
  /** This checkout unless set. */
  checkout?: Checkout;
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
  /** Where it serves its metrics (`host:port`), once it has said so; none when it serves none. */
  metricsAddress?: string;
}

export class LaunchError extends Error {}

/**
 * The launcher's flags, by name with what each does: the ones given, as a set. `--help` prints
 * them and exits; any other flag stops the launch before anything starts, where it was ignored
 * (`--postgress` ran on SQLite, `--help` ran a whole mesh).
 */
export function launchFlags(
  command: string,
  flags: Readonly<Record<string, string>>,
  argv: readonly string[] = process.argv.slice(2),
): Set<string> {
  const usage = () =>
    [
      `usage: ${command} --${Object.keys(flags)
        .map((flag) => ` [${flag}]`)
        .join("")}`,
      ...Object.entries(flags).map(([flag, what]) => `  ${flag.padEnd(12)} ${what}`),
      "Settings are SHOP_* variables: README, Configuration.",
    ].join("\n");
  if (argv.includes("--help") || argv.includes("-h")) {
    console.log(usage());
    process.exit(0);
  }
  const unknown = argv.filter((arg) => !Object.hasOwn(flags, arg));
  if (unknown.length > 0) {
    console.error(`${command}: unknown ${unknown.join(", ")}, so nothing started\n${usage()}`);
    process.exit(2);
  }
  return new Set(argv);
}

/**
 * A deployment's credentials and profile, which a launch would hand to every replica although
 * it signs its own tokens and dials its replicas with the development credentials: the seed
 * and every call would be refused. A launcher stops on them, naming each, before it starts
 * anything (a PostgreSQL server included).
 */
const DEPLOYMENT_SETTINGS = [
  "SHOP_JWKS_FILE",
  "SHOP_JWT_AUDIENCE",
  "SHOP_JWT_ISSUER",
  "SHOP_TLS_CA_FILE",
  "SHOP_TLS_CERT_FILE",
  "SHOP_TLS_KEY_FILE",
];

export function refuseDeploymentSettings(environment: NodeJS.ProcessEnv): void {
  const set = DEPLOYMENT_SETTINGS.filter((name) => environment[name]);
  const profile = environment.SHOP_PROFILE;
  if (profile && profile !== "development") set.unshift(`SHOP_PROFILE=${profile}`);
  if (set.length === 0) return;
  throw new LaunchError(
    `${set.join(", ")}: a deployment's ${set.length > 1 ? "settings" : "setting"}; a launch runs every replica with the development credentials (npm run certs) and profile, and signs its own tokens with them. Unset ${set.length > 1 ? "them" : "it"}, or deploy with compose or Kubernetes (deploy/README.md)`,
  );
}

/**
 * Starts a child with its output appended to logDir/<name>.log. Its stdout, where the services
 * write a line per call, gets the file itself: relayed through this process, every batch of
 * lines cost this event loop a read and a write (a tenth of a core while a service logged 10,000
 * calls a second), and the child's writes stalled whenever this process fell behind. Its stderr,
 * which is little and holds a failed start's last words (waitReported), is read here and
 * appended to the same file.
 */
function startLogged(
  name: string,
  logDir: string,
  start: (stdout: number) => ChildProcess,
): LoggedProcess {
  mkdirSync(logDir, { recursive: true });
  const logFile = path.join(logDir, `${name}.log`);
  const stdout = openSync(logFile, "a");
  let child: ChildProcess;
  try {
    child = start(stdout);
  } finally {
    closeSync(stdout); // the child has its own copy
  }
  child.stderr?.pipe(createWriteStream(logFile, { flags: "a" }));
  return { name, child, logFile };
}

/**
 * Linux's parent-death signal, set by util-linux's setpriv before it runs the program: a program
 * of someone else's (Envoy, Prometheus) has no IPC channel to watch, and without it would keep
 * its ports after a killed launcher, so that the next launch could not start.
 */
const SETPRIV = "/usr/bin/setpriv";
const stoppedWithLauncher = existsSync(SETPRIV) ? [SETPRIV, "--pdeathsig", "TERM", "--"] : [];

/**
 * Starts `command` from the repo root with its output appended to logDir/<name>.log. It stops
 * when its launcher goes away, where the system can say so (stoppedWithLauncher).
 */
export function spawnLogged(
  name: string,
  command: string,
  args: readonly string[],
  logDir: string,
  env: NodeJS.ProcessEnv = process.env,
): LoggedProcess {
  const [program = command, ...argv] = [...stoppedWithLauncher, command, ...args];
  return startLogged(name, logDir, (stdout) =>
    spawn(program, argv, { cwd: repoRoot, env, stdio: ["ignore", stdout, "pipe"] }),
  );
}

/**
 * Starts a TypeScript program under Node with its log going to logDir/<name>.log and an IPC
 * channel, over which it says where it serves (see waitServing). A program with a channel stops
 * when its launcher goes away.
 */
export function forkLogged(
  name: string,
  script: string,
  args: readonly string[],
  logDir: string,
  env: NodeJS.ProcessEnv,
  runtime: Runtime = "tsx",
  checkout = THIS_CHECKOUT,
): LoggedProcess {
  return startLogged(name, logDir, (stdout) =>
    fork(script, args, {
      cwd: checkout.root,
      env: { ...envFor(runtime, checkout), ...env },
      execArgv: execArgvFor(runtime, checkout),
      stdio: ["ignore", stdout, "pipe", "ipc"],
    }),
  );
}

/** Starts a service replica with its log going to logDir/<name>.log. */
export function spawnService(spec: ProcessSpec, logDir: string): RunningProcess {
  const env = {
    ...process.env,
    SHOP_HOST: spec.host,
    SHOP_PORT: String(spec.port),
    ...spec.env,
  };
  const { runtime, checkout } = spec.runtime
    ? { runtime: spec.runtime, checkout: spec.checkout }
    : launcherRuntime();
  const main = mainFor(runtime, checkout);
  const proc = forkLogged(spec.name, main, [spec.service], logDir, env, runtime, checkout);
  const running: RunningProcess = { ...proc, spec, address: `${spec.host}:${spec.port}` };
  // kit/runtime/run.ts reports its metrics address with its gRPC one (a port 0 becomes a real one).
  proc.child.on("message", (message) => {
    const metrics = (message as { metrics?: unknown } | null)?.metrics;
    if (typeof metrics === "string") running.metricsAddress = metrics;
  });
  return running;
}

/**
 * How to dial a replica: with its own certificate when it serves mutual TLS (its SHOP_TLS_*
 * settings), checking that it proves its service's identity; plaintext otherwise.
 */
export function transportFor(spec: Pick<ProcessSpec, "service" | "env">) {
  const env = spec.env ?? {};
  const { SHOP_TLS_CERT_FILE: cert, SHOP_TLS_KEY_FILE: key, SHOP_TLS_CA_FILE: ca } = env;
  return channelCredentials(
    cert && key && ca ? readTls({ cert, key, ca }) : undefined,
    spec.service,
  );
}

/** One grpc.health.v1 Check of a service's proto service: true when it answers SERVING. */
export async function checkServing(
  address: string,
  protoService: string,
  timeoutMs = 1_000,
  transport?: ReturnType<typeof channelCredentials>,
): Promise<boolean> {
  const health = createClient(HealthService, address, transport && { transport });
  try {
    const { status } = await health.check({ service: protoService }, { timeoutMs });
    return status === HealthCheckResponse_ServingStatus.SERVING;
  } catch {
    return false;
  } finally {
    health.close();
  }
}

/**
 * Resolves with the address a process reports over IPC once it serves ({serving: "host:port"},
 * sent by kit/runtime/run.ts after it bound its port). Rejects, with the process's last words, if
 * it exits first or the time runs out. Only the process itself can send this, so another process
 * already on the port is never taken for it.
 */
export async function waitReported(proc: LoggedProcess, timeoutMs = 30_000): Promise<string> {
  let stderr = "";
  const keep = (chunk: Buffer) => {
    stderr = (stderr + chunk).slice(-2000);
  };
  proc.child.stderr?.on("data", keep);
  let timer: NodeJS.Timeout | undefined;
  let onMessage: ((message: unknown) => void) | undefined;
  try {
    return await Promise.race([
      new Promise<string>((resolve) => {
        onMessage = (message) => {
          const serving = (message as { serving?: unknown } | null)?.serving;
          if (typeof serving === "string") resolve(serving);
        };
        proc.child.on("message", onMessage);
      }),
      once(proc.child, "exit").then(async ([code, signal]) => {
        // "exit" can come before the last of stderr is read; "close" comes after it.
        await Promise.race([once(proc.child, "close"), sleep(1_000, undefined, { ref: false })]);
        const why = stderr.trim().split("\n").slice(-3).join("\n") || `exit ${code ?? signal}`;
        throw new LaunchError(`${proc.name} failed to start: ${why} (log: ${proc.logFile})`);
      }),
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new LaunchError(`${proc.name} did not start within ${timeoutMs} ms`)),
          timeoutMs,
        );
      }),
    ]);
  } finally {
    clearTimeout(timer);
    if (onMessage) proc.child.off("message", onMessage);
    proc.child.stderr?.off("data", keep);
  }
}

/**
 * Resolves when a replica has said it serves (waitReported) and its health check answers
 * SERVING for every proto service of its service.
 */
export async function waitServing(proc: RunningProcess, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  await waitReported(proc, timeoutMs);
  for (const protoService of registry.get(proc.spec.service).protoServices) {
    while (!(await checkServing(proc.address, protoService, 1_000, transportFor(proc.spec)))) {
      if (Date.now() > deadline) {
        throw new LaunchError(`${proc.spec.name} did not report SERVING within ${timeoutMs} ms`);
      }
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
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
