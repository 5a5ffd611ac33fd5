// The process bookkeeping of `npm start` and `npm run mesh`: start service processes, report each
// as it comes up, and stop everything on Ctrl-C or when something the launcher cannot do without
// dies.
import { existsSync } from "node:fs";
import path from "node:path";
import {
  type LoggedProcess,
  type ProcessSpec,
  type RunningProcess,
  repoRoot,
  spawnService,
  stopProcess,
  waitServing,
} from "./launcher.js";

export class Supervisor {
  private readonly procs: LoggedProcess[] = [];
  private stopped: Promise<never> | undefined;

  /** True once stopAll has begun: exits from then on are expected. */
  get stopping(): boolean {
    return this.stopped !== undefined;
  }

  /** Tracks a process, so that stopAll stops it. */
  add<T extends LoggedProcess>(proc: T): T {
    this.procs.push(proc);
    return proc;
  }

  /** Calls `handler` with the exit code or signal if `proc` exits before stopAll. */
  onUnexpectedExit(proc: LoggedProcess, handler: (how: string) => void): void {
    proc.child.once("exit", (code, signal) => {
      if (!this.stopping) handler(String(code ?? signal));
    });
  }

  /** Stops every tracked process (SIGTERM, then SIGKILL after the grace period) and exits. */
  stopAll(code: number): Promise<never> {
    this.stopped ??= (async () => {
      await Promise.all(this.procs.map((proc) => stopProcess(proc)));
      process.exit(code);
    })();
    return this.stopped;
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
   * Spawns one process per spec and waits for each to report SERVING, printing a line per process
   * as it does, then calling `onServing` with it. Rejects with a LaunchError if one fails to start.
   */
  async startServices(
    specs: readonly ProcessSpec[],
    logDir: string,
    options: { started?: number; onServing?: (proc: RunningProcess) => void } = {},
  ): Promise<RunningProcess[]> {
    const started = options.started ?? Date.now();
    const width = Math.max(8, ...specs.map((spec) => spec.name.length + 1));
    const procs = specs.map((spec) => this.add(spawnService(spec, logDir)));
    await Promise.all(
      procs.map(async (proc) => {
        await waitServing(proc);
        console.log(
          `  ${proc.spec.name.padEnd(width)} ${proc.address} SERVING (${Date.now() - started} ms)`,
        );
        options.onServing?.(proc);
      }),
    );
    return procs;
  }
}

/** grpcurl as a banner prints it: the repo's own copy, relative to the working directory. */
export function grpcurlCommand(): string {
  const local = path.join(repoRoot, ".tools/bin/grpcurl");
  return existsSync(local) ? path.relative(process.cwd(), local) || local : "grpcurl";
}

/** A JSON body for a shell command line, in single quotes (the ids never contain one). */
export const shellJson = (body: object) => `'${JSON.stringify(body)}'`;
