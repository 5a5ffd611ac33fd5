// The services' compiled JavaScript, as the image runs it, for the tests that start service
// processes: one starts in a quarter of the CPU time tsx takes. The build is named by a hash of
// everything that goes into it, so a test never runs code older than the sources, and test files
// running side by side share one build. README's quick start and test/start.test.ts still start
// `npm start` through tsx, as a developer does.
//
//   const child = await serviceProcess(t, { SHOP_SERVICE: "user" });   // killed when t ends
//   await exec(process.execPath, [await compiledEntry("scripts/migrate.ts")]);
//   spawnService({ ...spec, ...(await compiled()) }, logDir);          // as the launcher would
import { type ChildProcess, type StdioOptions, spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat } from "node:fs/promises";
import path from "node:path";
import type { ExecutionContext } from "ava";
import { bundleServices } from "../../scripts/lib/build.js";
import {
  type Checkout,
  type Runtime,
  repoRoot,
  THIS_CHECKOUT,
} from "../../scripts/lib/launcher.js";

/** Folders and files whose contents the bundle is built from: the sources and the packages. */
const INPUTS = ["services", "kit", "gen", "deploy", "scripts", "package-lock.json"];

/** Test builds live here (git-ignored), inside the checkout so Node finds node_modules. */
const ROOT = path.join(repoRoot, ".build", "test");

/** Builds older than this are removed when a new one is made. */
const KEEP_MS = 24 * 60 * 60 * 1000;

async function filesUnder(entry: string): Promise<string[]> {
  const full = path.join(repoRoot, entry);
  if (!(await stat(full)).isDirectory()) return [entry];
  const found = await readdir(full, { recursive: true, withFileTypes: true });
  return found
    .filter((dirent) => dirent.isFile())
    .map((dirent) => path.relative(repoRoot, path.join(dirent.parentPath, dirent.name)))
    .sort();
}

async function inputsHash(): Promise<string> {
  const hash = createHash("sha256");
  for (const file of (await Promise.all(INPUTS.map(filesUnder))).flat()) {
    hash
      .update(file)
      .update("\0")
      .update(await readFile(path.join(repoRoot, file)))
      .update("\0");
  }
  return hash.digest("hex").slice(0, 16);
}

async function removeOldBuilds(keep: string): Promise<void> {
  for (const name of await readdir(ROOT)) {
    const dir = path.join(ROOT, name);
    if (dir === keep) continue;
    const { mtimeMs } = await stat(dir).catch(() => ({ mtimeMs: Date.now() }));
    if (Date.now() - mtimeMs > KEEP_MS) await rm(dir, { recursive: true, force: true });
  }
}

let built: Promise<string> | undefined;

/** The folder of the services' build for the sources as they are now; built when missing. */
export function servicesBuild(): Promise<string> {
  built ??= (async () => {
    const dir = path.join(ROOT, await inputsHash());
    if (existsSync(path.join(dir, "services", "main.js"))) return dir;
    // Built aside and renamed into place: a test file building the same hash at the same time
    // finds either nothing or a whole build.
    const aside = `${dir}.${process.pid}`;
    await bundleServices(aside);
    await mkdir(ROOT, { recursive: true });
    await rename(aside, dir).catch(async (error: NodeJS.ErrnoException) => {
      if (error.code !== "ENOTEMPTY" && error.code !== "EEXIST") throw error;
      await rm(aside, { recursive: true, force: true });
    });
    await removeOldBuilds(dir);
    return dir;
  })();
  return built;
}

/** How spawnService runs a replica from the test build: `{ ...spec, ...(await compiled()) }`. */
export async function compiled(): Promise<{ runtime: Runtime; checkout: Checkout }> {
  return { runtime: "compiled", checkout: { ...THIS_CHECKOUT, build: await servicesBuild() } };
}

/** An entry point (services/main.ts, scripts/migrate.ts) in the test build: `node <file>` runs it. */
export async function compiledEntry(entry: string): Promise<string> {
  return path.join(await servicesBuild(), entry.replace(/\.ts$/, ".js"));
}

/**
 * A service process (or another entry point of the build) run from the test build, with `env`
 * over this process's environment; killed when `t` ends.
 */
export async function serviceProcess(
  t: ExecutionContext,
  env: Record<string, string>,
  stdio: StdioOptions = ["ignore", "pipe", "pipe"],
  entry = "services/main.ts",
): Promise<ChildProcess> {
  const child = spawn(process.execPath, [await compiledEntry(entry)], {
    cwd: repoRoot,
    env: { ...process.env, ...env },
    stdio,
  });
  t.teardown(() => {
    child.kill("SIGKILL");
  });
  return child;
}
