// `npm run bench -- --against REF`: this checkout and another build of the project, each with
// its own fleet, measured in turns. A lever worth a few percent is smaller than the drift of this
// kind of machine between two runs; in turns, both builds meet the same machine. See
// bench/README.md ("Two builds in turns").
import { execFileSync, spawnSync } from "node:child_process";
import { existsSync, symlinkSync } from "node:fs";
import { chmod, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { pathToFileURL } from "node:url";
import { parseArgs } from "node:util";
import type { Migration } from "../kit/db/index.js";
import { DEV_CERTS_DIR } from "../kit/security/security.js";
import { type Checkout, repoRoot, THIS_CHECKOUT, tool } from "../scripts/lib/launcher.js";
import { Supervisor } from "../scripts/lib/supervisor.js";
import { registry, type ServiceName } from "../services/registry.js";
import {
  type AgainstRun,
  type AgainstSettings,
  againstReport,
  type Comparison,
  compare,
  type MigrationNames,
  type Scripts,
  type Side,
  type Slice,
  sliceOf,
} from "./lib/against.js";
import { buildDist } from "./lib/build.js";
import { type Build, type FleetOptions, launch, seedFleets } from "./lib/fleet.js";
import { runLoad } from "./lib/ghz.js";
import { measure } from "./lib/measure.js";
import { defaultOutDir, positiveInt, seconds } from "./lib/options.js";
import { scriptOf } from "./lib/proc.js";
import { reportName } from "./lib/report-name.js";
import type { ProcessName, Storage, Target, TargetContext } from "./lib/targets.js";
import { targetById } from "./lib/targets.js";

const log = (message: string) => console.log(`bench: ${message}`);

export const AGAINST_USAGE = `npm run bench -- --against REF [options]

  Builds REF (a commit, branch or tag of this repository) beside this checkout, starts a fleet
  of each, and loads them in turns: short slices, the first of each pair alternating.

  --slices N               slices per build, target and concurrency (default 10)
  --duration SECONDS       per slice (default 3)
  --warmup SECONDS         per build and target, at the highest concurrency (default 3)
  --concurrency LIST       comma-separated (default 16)
  --targets LIST           comma-separated ids (default kit-echo,get-direct-tls,create-direct-tls)
  --alongside TARGET@C     during every slice, load TARGET at concurrency C on the same build too,
                           unmeasured: latency under a mixed load (CPU per call then includes it)
  --gc                     count each process's garbage per call too
  --out DIR                where the .md and .json go (default bench/results)
  --keep                   keep the temp dir: REF's tree, both fleets' data and logs`;

interface AgainstOptions {
  ref: string;
  settings: AgainstSettings;
  outDir: string;
  keep: boolean;
}

function parse(argv: string[]): AgainstOptions | undefined {
  const { values } = parseArgs({
    args: argv,
    options: {
      against: { type: "string" },
      slices: { type: "string" },
      duration: { type: "string" },
      warmup: { type: "string" },
      concurrency: { type: "string" },
      targets: { type: "string" },
      alongside: { type: "string" },
      gc: { type: "boolean", default: false },
      out: { type: "string" },
      keep: { type: "boolean", default: false },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
  });
  if (values.help) return undefined;
  if (!values.against) throw new Error("--against needs a git ref");
  return {
    ref: values.against,
    settings: {
      slices: positiveInt(values.slices ?? "10", "--slices"),
      sliceS: seconds(values.duration ?? "3", "--duration"),
      warmupS: seconds(values.warmup ?? "3", "--warmup"),
      concurrency: (values.concurrency ?? "16")
        .split(",")
        .map((level) => positiveInt(level.trim(), "--concurrency")),
      targets: (values.targets ?? "kit-echo,get-direct-tls,create-direct-tls")
        .split(",")
        .map((id) => targetById(id.trim()).id),
      gc: values.gc === true,
      ...(values.alongside && { alongside: alongsideOf(values.alongside) }),
    },
    outDir: path.resolve(values.out ?? defaultOutDir),
    keep: values.keep === true,
  };
}

/** `--alongside TARGET@C`. */
function alongsideOf(value: string): NonNullable<AgainstSettings["alongside"]> {
  const [id = "", level = ""] = value.split("@");
  if (!level) throw new Error(`--alongside needs TARGET@CONCURRENCY, got "${value}"`);
  return { target: targetById(id.trim()).id, concurrency: positiveInt(level, "--alongside") };
}

const git = (...args: string[]) => spawnSync("git", args, { cwd: repoRoot, encoding: "utf8" });

/** The commit a ref names, or undefined. */
function commitOf(ref: string): string | undefined {
  const result = git("rev-parse", "--verify", "--quiet", `${ref}^{commit}`);
  return result.status === 0 ? result.stdout.trim() : undefined;
}

/**
 * REF's files in `tree`, with this checkout's packages and development credentials, built. Its
 * image environment, its Envoy config and its migrations are its own, so a changed Node flag,
 * Envoy setting or schema is measured too.
 */
async function checkoutOf(
  commit: string,
  tree: string,
): Promise<Build & { migrations: Migrations }> {
  await mkdir(tree);
  execFileSync("sh", ["-c", `git archive ${commit} | tar -x -C "$0"`, tree], { cwd: repoRoot });
  for (const shared of ["node_modules", ".certs"]) {
    if (existsSync(path.join(repoRoot, shared))) {
      symlinkSync(path.join(repoRoot, shared), path.join(tree, shared));
    }
  }
  buildDist(tree);
  const load = (file: string) => import(pathToFileURL(path.join(tree, "deploy", file)).href);
  const { RUNTIME_ENV } = (await load("settings.ts")) as { RUNTIME_ENV: Checkout["runtimeEnv"] };
  const { envoyYaml } = (await load(path.join("envoy", "config.ts"))) as Required<
    Pick<Build, "envoyYaml">
  >;
  return { root: tree, runtimeEnv: RUNTIME_ENV, envoyYaml, migrations: await migrationsOf(tree) };
}

type Migrations = Record<ServiceName, readonly Migration[]>;

/** Each service's migrations in `tree`, so that a build's databases get its own schema. */
async function migrationsOf(tree: string): Promise<Migrations> {
  const entries = registry.names.map(async (name) => {
    const file = path.join(tree, "services", name, "migrations", "index.ts");
    if (!existsSync(file)) throw new Error(`the build has no ${path.relative(tree, file)}`);
    const { migrations } = (await import(pathToFileURL(file).href)) as {
      migrations: readonly Migration[];
    };
    return [name, migrations] as const;
  });
  return Object.fromEntries(await Promise.all(entries)) as Migrations;
}

const ourMigrations = Object.fromEntries(
  registry.services.map((service) => [service.name, service.migrations]),
) as Migrations;

/** The names of the migrations each service's databases get. */
const namesOf = (migrations: Migrations): MigrationNames =>
  Object.fromEntries(
    Object.entries(migrations).map(([name, list]) => [
      name,
      list.map((migration) => migration.name),
    ]),
  );

/** One build's fleet, started and seeded. */
interface Started {
  context: TargetContext;
  pids: Map<ProcessName, number>;
  scripts: Scripts;
  dir: string;
  gcDir: string | undefined;
}

/** Starts and seeds one build's fleet in `dir`. */
async function start(
  checkout: Build,
  dir: string,
  run: {
    supervisor: Supervisor;
    needs: Set<ProcessName>;
    storages: Set<Storage>;
    fleetOptions: FleetOptions;
  },
): Promise<Started> {
  await mkdir(dir);
  const gcDir = run.fleetOptions.gc ? path.join(dir, "gc") : undefined;
  if (gcDir) await mkdir(gcDir);
  const launched = await launch(
    run.supervisor,
    run.needs,
    run.storages,
    dir,
    run.fleetOptions,
    checkout,
  );
  const scripts: Scripts = {};
  for (const [name, pid] of launched.pids) {
    const script = scriptOf(pid);
    if (script) scripts[name] = script;
  }
  return {
    context: {
      addresses: launched.addresses,
      fleets: await seedFleets(launched.plans),
      certs: DEV_CERTS_DIR,
    },
    pids: launched.pids,
    scripts,
    dir,
    gcDir,
  };
}

/** Unmeasured load on one build, at the highest concurrency. */
async function warmUp(target: Target, build: Started, settings: AgainstSettings): Promise<void> {
  await runLoad(target.call(build.context), {
    ghz: tool("ghz"),
    address: build.context.addresses[target.entry] as string,
    concurrency: Math.max(...settings.concurrency),
    durationS: settings.warmupS,
    outFile: path.join(build.dir, "warmup.json"),
    cpus: os.cpus().length,
  });
}

/** The slices of both builds at one concurrency, in turns, the first of each pair alternating. */
async function inTurns(
  target: Target,
  concurrency: number,
  sides: Record<Side, Started>,
  settings: AgainstSettings,
): Promise<Comparison> {
  const slices: Slice[] = [];
  const alongside = settings.alongside && {
    target: targetById(settings.alongside.target),
    concurrency: settings.alongside.concurrency,
  };
  for (let i = 0; i < settings.slices; i++) {
    const order: Side[] = i % 2 === 0 ? ["base", "new"] : ["new", "base"];
    for (const side of order) {
      const { context, pids, dir, gcDir } = sides[side];
      // Begins half a second before the slice and ends half a second after it.
      const load =
        alongside &&
        runLoad(alongside.target.call(context), {
          ghz: tool("ghz"),
          address: context.addresses[alongside.target.entry] as string,
          concurrency: alongside.concurrency,
          durationS: settings.sliceS + 1,
          outFile: path.join(dir, "alongside.json"),
          cpus: os.cpus().length,
        });
      if (load) await sleep(500);
      const run = await measure(
        target,
        context,
        concurrency,
        settings.sliceS,
        pids,
        { ghzCpus: os.cpus().length },
        dir,
        gcDir,
      );
      const other = await load;
      slices.push({ ...sliceOf(side, target, run), ...(other && { alongsideOk: other.ok }) });
    }
  }
  return compare(target, concurrency, slices);
}

async function main(): Promise<number> {
  let options: AgainstOptions | undefined;
  try {
    options = parse(process.argv.slice(2));
  } catch (error) {
    console.error(`bench: ${(error as Error).message}\n\n${AGAINST_USAGE}`);
    return 2;
  }
  if (!options) {
    console.log(AGAINST_USAGE);
    return 0;
  }
  const commit = commitOf(options.ref);
  if (!commit) {
    console.error(`bench: --against ${options.ref}: no such commit in ${repoRoot}`);
    return 2;
  }
  const { settings } = options;
  const targets = settings.targets.map(targetById);
  const storages = new Set(targets.flatMap((target) => target.storage ?? []));
  const alongside = settings.alongside ? [targetById(settings.alongside.target)] : [];
  const needs = new Set(
    [...targets, ...alongside].filter((t) => !t.storage).flatMap((target) => target.path),
  );
  for (const name of ["ghz", ...(needs.has("envoy") || needs.has("tls-envoy") ? ["envoy"] : [])]) {
    if (!existsSync(tool(name))) {
      console.error(`bench: ${tool(name)} is missing; run \`npm run tools\``);
      return 1;
    }
  }

  const started = new Date();
  const head = git("rev-parse", "HEAD").stdout.trim();
  const dirty = git("status", "--porcelain", "--untracked-files=no").stdout.trim() !== "";
  const dir = await mkdtemp(path.join(os.tmpdir(), "shopmesh-against-"));
  if (storages.has("postgres")) await chmod(dir, 0o711);
  const supervisor = new Supervisor();
  const cleanUp = async () => {
    await supervisor.stop();
    if (options.keep) log(`kept ${dir}`);
    else await rm(dir, { recursive: true, force: true });
  };
  const interrupted = async () => {
    console.error("\nbench: interrupted; stopping");
    await cleanUp();
    process.exit(130);
  };
  process.once("SIGINT", interrupted);
  process.once("SIGTERM", interrupted);

  try {
    log(`building ${options.ref} (${commit.slice(0, 7)}) and this checkout`);
    const base = await checkoutOf(commit, path.join(dir, "tree"));
    buildDist();
    const fleetOptions: FleetOptions = {
      gc: settings.gc,
      cpuProfDir: undefined,
      runtime: "compiled",
      envoyConcurrency: 1,
    };
    // The echo servers run through tsx. Its transform cache is keyed by path: this checkout's
    // files hit it, REF's new tree would not, and a miss leaves esbuild's worker thread and
    // process beside the server. Without the cache both sides run alike.
    process.env.TSX_DISABLE_CACHE = "1";
    const sides = {} as Record<Side, Started>;
    for (const [side, checkout] of [
      ["base", base],
      ["new", THIS_CHECKOUT],
    ] as const) {
      log(`starting ${[...needs].join(", ")} of ${side} (${checkout.root})`);
      const sideDir = path.join(dir, side);
      sides[side] = await start(checkout, sideDir, { supervisor, needs, storages, fleetOptions });
    }

    const comparisons: Comparison[] = [];
    for (const target of targets) {
      if (settings.warmupS > 0) {
        for (const side of ["base", "new"] as const) await warmUp(target, sides[side], settings);
      }
      for (const concurrency of settings.concurrency) {
        const result = await inTurns(target, concurrency, sides, settings);
        comparisons.push(result);
        log(
          `${target.id.padEnd(18)} c=${String(concurrency).padEnd(3)} CPU ms/call ${result.base.cpuMs.toFixed(4)} → ${result.new.cpuMs.toFixed(4)}  new lower in ${result.newLower} of ${result.pairs} (p ${result.p.toFixed(3)})`,
        );
      }
    }

    const run: AgainstRun = {
      version: 1,
      date: started.toISOString(),
      base: {
        ref: options.ref,
        commit,
        scripts: sides.base.scripts,
        migrations: namesOf(base.migrations),
      },
      new: {
        commit: head,
        uncommittedChanges: dirty,
        scripts: sides.new.scripts,
        migrations: namesOf(ourMigrations),
      },
      settings,
      machine: {
        cores: os.cpus().length,
        cpuModel: os.cpus()[0]?.model.trim() ?? "unknown",
        node: process.version,
      },
      comparisons,
      wallS: (Date.now() - started.getTime()) / 1000,
    };
    await mkdir(options.outDir, { recursive: true });
    const name = reportName(options.outDir, started, "against");
    const rounded = (_key: string, value: unknown) =>
      typeof value === "number" && !Number.isInteger(value) ? Math.round(value * 1e4) / 1e4 : value;
    await writeFile(
      path.join(options.outDir, `${name}.json`),
      `${JSON.stringify(run, rounded, 2)}\n`,
    );
    await writeFile(path.join(options.outDir, `${name}.md`), againstReport(run));
    log(`wrote ${path.join(options.outDir, name)}.{md,json} in ${run.wallS.toFixed(0)} s`);
    const failed = comparisons.some((c) => c.slices.some((slice) => slice.rps === 0));
    return failed ? 1 : 0;
  } catch (error) {
    console.error(`bench: ${(error as Error).stack ?? error}`);
    return 1;
  } finally {
    await cleanUp();
  }
}

process.exitCode = await main();
