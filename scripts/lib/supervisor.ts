// The one supervisor: `npm start`, `npm run mesh`, the benchmark and the tests launch a plan
// (plan.ts) through it. It takes the data directory, refuses ports in use, migrates the
// databases, starts Envoy and every replica, reports each as it serves, and stops everything on
// Ctrl-C, when the launcher dies, or when no replica of some service is left.
import {
  closeSync,
  mkdirSync,
  openSync,
  readFileSync,
  rmSync,
  writeFileSync,
  writeSync,
} from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { envoyYaml } from "../../deploy/envoy/config.js";
import { migrateDatabase, openFailure } from "../../kit/db/index.js";
import { unknownSettingMessage, unknownSettings } from "../../kit/settings.js";
import { registry, type ServiceName } from "../../services/registry.js";
import { type EnvoyProcess, spawnEnvoy } from "./envoy.js";
import {
  type Checkout,
  LaunchError,
  type LoggedProcess,
  type ProcessSpec,
  type RunningProcess,
  type Runtime,
  spawnService,
  stopProcess,
  waitReported,
  waitServing,
} from "./launcher.js";
import type { FleetPlan } from "./plan.js";
import {
  type PrometheusProcess,
  planTargets,
  prometheusBinary,
  spawnPrometheus,
} from "./prometheus.js";

/** The file that marks a data directory as in use by one launch. */
export const LOCK_FILE = ".shopmesh.lock";

/**
 * How long a launch waits for a replica to serve. One that exits fails the launch at once, so
 * this bounds only a hang. A replica serves within 2 s on an idle machine, but six of them took
 * 65 s on one at a load average of 10 to 24.
 */
const START_TIMEOUT_MS = 120_000;

export interface LaunchOptions {
  /** When the launch began, for the "SERVING (n ms)" lines. */
  started?: number;
  /** What to tell the user when a port is taken, e.g. "is another npm start running?". */
  portHint: string;
  /** Print nothing (the benchmark has its own progress lines). */
  quiet?: boolean;
  /** Extra environment for every replica, e.g. a profiler's preload. */
  env?: Record<string, string>;
  /** Envoy's worker threads (--concurrency); one per core by default. */
  envoyConcurrency?: number;
  /**
   * Prometheus on this port, scraping every replica and Envoy (scripts/lib/prometheus.ts), started
   * once they serve; every `scrapeInterval` (5 s by default).
   */
  prometheus?: { port: number; scrapeInterval?: string };
  /** How the replicas run: tsx by default; compiled needs `npm run build` first. */
  runtime?: Runtime;
  /**
   * Whose build the replicas run, and whose migrations the databases get: this checkout's by default.
   */
  checkout?: Checkout;
  /** What writes Envoy's config: this checkout's deploy/envoy/config.ts by default. */
  envoyYaml?: typeof envoyYaml;
}

export interface Launched {
  replicas: RunningProcess[];
  envoy?: EnvoyProcess;
  prometheus?: PrometheusProcess;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export class Supervisor {
  private readonly procs: LoggedProcess[] = [];
  private readonly afterStopTasks: (() => Promise<void>)[] = [];
  private stopped: Promise<void> | undefined;
  private lock: string | undefined;

  /** True once stop has begun: exits from then on are expected. */
  get stopping(): boolean {
    return this.stopped !== undefined;
  }

  /** Tracks a process, so that stop() stops it. */
  add<T extends LoggedProcess>(proc: T): T {
    this.procs.push(proc);
    return proc;
  }

  /** Calls `handler` with the exit code or signal if `proc` exits before stop(). */
  onUnexpectedExit(proc: LoggedProcess, handler: (how: string) => void): void {
    proc.child.once("exit", (code, signal) => {
      if (!this.stopping) handler(String(code ?? signal));
    });
  }

  /**
   * Takes `dir` for this launch with a lock file naming this process. Another live launch holding
   * it is an error; a lock left by a launch that died is taken over.
   */
  lockDataDir(dir: string): void {
    mkdirSync(dir, { recursive: true });
    const file = path.join(dir, LOCK_FILE);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        const fd = openSync(file, "wx");
        writeSync(fd, `${process.pid}\n`);
        closeSync(fd);
        this.lock = file;
        return;
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
        const holder = Number.parseInt(readFileSync(file, "utf8"), 10);
        if (Number.isInteger(holder) && holder !== process.pid && alive(holder)) {
          throw new LaunchError(
            `${dir} is in use by another launch (pid ${holder}); stop it, or give this one ` +
              "its own SHOP_DATA_DIR",
          );
        }
        rmSync(file, { force: true });
      }
    }
    throw new LaunchError(`could not take ${file}`);
  }

  /** Runs `task` once stop() has stopped every process, e.g. to stop a database they used. */
  afterStop(task: () => Promise<void>): void {
    this.afterStopTasks.push(task);
  }

  /** Stops every tracked process (SIGTERM, then SIGKILL after the grace period). */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      await Promise.all(this.procs.map((proc) => stopProcess(proc)));
      for (const task of this.afterStopTasks) {
        await task().catch((error) => console.error(`while stopping: ${error}`));
      }
      if (this.lock) rmSync(this.lock, { force: true });
    })();
    return this.stopped;
  }

  /** Stops everything, then exits with `code`. */
  async stopAll(code: number): Promise<never> {
    await this.stop();
    process.exit(code);
  }

  /**
   * Ctrl-C (SIGINT) and SIGTERM stop everything, exit code 0. A closed terminal or pipe (EPIPE
   * on stdout) and any unexpected error stop everything too, instead of orphaning the services.
   */
  handleSignals(): void {
    process.stdout.on("error", () => void this.stopAll(1));
    process.stderr.on("error", () => {});
    process.on("uncaughtException", (error) => {
      console.error(error);
      void this.stopAll(1);
    });
    process.on("SIGINT", () => {
      if (!this.stopping) console.log("\nstopping…");
      void this.stopAll(0);
    });
    process.on("SIGTERM", () => void this.stopAll(0));
  }

  /**
   * Launches a plan: takes its data directory, checks that every port is free, migrates each
   * database once, starts every replica, each service after those it calls (startWaves), then
   * Envoy if the plan has it, and waits until each serves, printing a line per process. A replica that exits later is reported; when no replica
   * of a service is left, everything stops. Rejects with a LaunchError before anything serves
   * when a port is taken or a replica fails to start.
   */
  async launch(plan: FleetPlan, options: LaunchOptions): Promise<Launched> {
    const started = options.started ?? Date.now();
    const say = (line: string) => options.quiet || console.log(line);
    for (const unknown of unknownSettings(process.env, registry.names, registry.settings)) {
      console.error(unknownSettingMessage(unknown));
    }
    this.lockDataDir(plan.dataDir);
    const ports: [string, number][] = plan.replicas.flatMap((replica): [string, number][] => [
      [replica.name, replica.port],
      ...(replica.metricsPort
        ? [[`${replica.name} metrics`, replica.metricsPort] as [string, number]]
        : []),
    ]);
    if (plan.envoy) {
      ports.push(["envoy", plan.envoy.port], ["envoy admin", plan.envoy.adminPort]);
      if (plan.envoy.statsPort) ports.push(["envoy stats", plan.envoy.statsPort]);
    }
    if (options.prometheus) {
      prometheusBinary();
      ports.push(["prometheus", options.prometheus.port]);
    }
    await assertFree(plan.replicas[0]?.host ?? "127.0.0.1", ports, options.portHint);

    mkdirSync(plan.logDir, { recursive: true });
    // Replicas share a database, so each is migrated once, before any replica opens it.
    await Promise.all(
      registry.services.map((service) =>
        migrateDatabase(
          plan.databases[service.name],
          options.checkout?.migrations?.[service.name] ?? service.migrations,
          { schema: service.name },
        ).catch((error: unknown) => {
          throw new LaunchError(
            `${service.name}: ${openFailure(plan.databases[service.name], error)}`,
          );
        }),
      ),
    );

    // A service starts once every replica of the services it calls serves, and Envoy, which
    // health-checks every replica, once they all do. On one host, a connection to a port nothing
    // listens on yet can be given that very port as its own (a TCP self-connect: the default
    // ports lie in Linux's range for outgoing ones), and the replica meant to listen there then
    // fails to start, EADDRINUSE.
    const width = Math.max(8, ...plan.replicas.map((spec) => spec.name.length + 1));
    const alive = new Map<ServiceName, number>();
    const replicas: RunningProcess[] = [];
    for (const wave of startWaves(plan.replicas)) {
      const procs = wave.map((spec) =>
        this.add(
          spawnService(
            {
              ...spec,
              env: { ...spec.env, ...options.env },
              runtime: options.runtime,
              checkout: options.checkout,
            },
            plan.logDir,
          ),
        ),
      );
      replicas.push(...procs);
      await Promise.all(
        procs.map(async (proc) => {
          await waitServing(proc, START_TIMEOUT_MS);
          say(
            `  ${proc.spec.name.padEnd(width)} ${proc.address} SERVING (${Date.now() - started} ms)`,
          );
          const service = proc.spec.service;
          alive.set(service, (alive.get(service) ?? 0) + 1);
          this.onUnexpectedExit(proc, (how) => {
            const left = (alive.get(service) ?? 1) - 1;
            alive.set(service, left);
            console.error(`\n${proc.spec.name} exited unexpectedly (${how}); see ${proc.logFile}`);
            if (left > 0) {
              console.error(`its callers and Envoy send ${service} calls to the other replicas.`);
            } else {
              console.error(`no ${service} replica is left; stopping.`);
              void this.stopAll(1);
            }
          });
        }),
      );
    }

    let envoy: EnvoyProcess | undefined;
    if (plan.envoy) {
      writeFileSync(
        plan.envoy.configFile,
        (options.envoyYaml ?? envoyYaml)(
          plan.envoy.topology,
          undefined,
          "# Written by the launcher from deploy/envoy/config.ts and the registry; do not edit.\n",
        ),
      );
      const proc = this.add(
        spawnEnvoy({
          config: plan.envoy.configFile,
          logDir: plan.logDir,
          ...(options.envoyConcurrency && { concurrency: options.envoyConcurrency }),
        }),
      );
      envoy = proc;
      this.onUnexpectedExit(proc, (how) => {
        console.error(`\nenvoy exited unexpectedly (${how}); see ${proc.logFile}`);
        void this.stopAll(1);
      });
    }
    if (envoy) {
      await envoy.waitReady();
      say(
        `  ${"envoy".padEnd(width)} 127.0.0.1:${plan.envoy?.port} all replicas healthy (${Date.now() - started} ms)`,
      );
    }
    let prometheus: PrometheusProcess | undefined;
    if (options.prometheus) {
      const metrics = Object.fromEntries(
        replicas.map((proc) => [proc.spec.name, proc.metricsAddress ?? ""]),
      );
      prometheus = this.add(
        await spawnPrometheus({
          targets: planTargets(plan, metrics),
          port: options.prometheus.port,
          dataDir: plan.dataDir,
          logDir: plan.logDir,
          ...(options.prometheus.scrapeInterval && {
            scrapeInterval: options.prometheus.scrapeInterval,
          }),
        }),
      );
      say(`  ${"prometheus".padEnd(width)} ${prometheus.url} ready (${Date.now() - started} ms)`);
    }
    return { replicas, ...(envoy && { envoy }), ...(prometheus && { prometheus }) };
  }

  /**
   * Starts a TypeScript server that reports where it serves over IPC (see waitReported), such
   * as the benchmark's echo servers, and waits for that address.
   */
  async startReporting(proc: LoggedProcess): Promise<string> {
    this.add(proc);
    return waitReported(proc, START_TIMEOUT_MS);
  }
}

/** A port in use fails the launch before anything starts, naming the process it was for. */
export async function assertFree(
  host: string,
  ports: [string, number][],
  hint: string,
): Promise<void> {
  for (const [what, port] of ports) {
    const server = createServer();
    const error = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once("error", resolve);
      server.listen(port, host, () => resolve(undefined));
    });
    if (!error) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      continue;
    }
    throw new LaunchError(
      `${what} failed to start: ${error.code}: ${host}:${port} ${
        error.code === "EADDRINUSE" ? "is in use" : "cannot be bound"
      }; ${hint}`,
    );
  }
}

/**
 * `replicas` in the waves they start in: each service's after every service it calls (the
 * registry's dependencies), in plan order within a wave.
 */
export function startWaves(replicas: readonly ProcessSpec[]): ProcessSpec[][] {
  const levels = new Map<ServiceName, number>();
  const levelOf = (name: ServiceName): number => {
    const known = levels.get(name);
    if (known !== undefined) return known;
    const level = 1 + Math.max(-1, ...registry.get(name).dependencies.map(levelOf));
    levels.set(name, level);
    return level;
  };
  const waves: ProcessSpec[][] = [];
  for (const spec of replicas) {
    const level = levelOf(spec.service);
    waves[level] = [...(waves[level] ?? []), spec];
  }
  return waves.filter((wave) => wave !== undefined);
}
