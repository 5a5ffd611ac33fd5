// The services' JavaScript as the production image runs it: each entry point (a service process,
// the migrate and seed scripts) bundled with the packages it imports and minified. One file loads
// faster than hundreds of modules and holds far less source text in the heap: idle RSS and
// start-up time are in README "Deploy". Code loaded only on demand (an OTLP exporter) goes into
// chunks of its own under <out>/chunks. `npm run build` writes dist/; the tests build their own.
import { cp, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/** Entry points, built to <out>/<same path>.js. */
const ENTRY_POINTS = ["services/main.ts", "scripts/migrate.ts", "scripts/seed.ts"];

/** Loaded from node_modules at run time, not bundled. */
const EXTERNAL = [
  // Native addons, found by their own package's path.
  "better-sqlite3",
  "sqlite3",
  // Loaded by knex only with SHOP_DATABASE_URL, so a SQLite process never reads them.
  "pg",
  "pg-native",
  "pg-query-stream",
  // knex's other dialects' drivers, which shopmesh does not install.
  "mysql",
  "mysql2",
  "oracledb",
  "tedious",
  "mariadb",
  "mariadb/*",
  // Reads its health.proto from beside its own files.
  "grpc-health-check",
];

/**
 * Bundles the entry points into `outDir`, emptied first. The folder must sit inside this checkout,
 * where Node finds the external packages in its node_modules.
 */
export async function bundleServices(outDir: string): Promise<void> {
  await rm(outDir, { recursive: true, force: true });
  await build({
    absWorkingDir: repoRoot,
    entryPoints: ENTRY_POINTS,
    outbase: ".",
    outdir: outDir,
    // Every output file sits one folder below outDir, so kit/descriptor.ts's `../gen/descriptor`
    // reaches <out>/gen from any of them.
    chunkNames: "chunks/[name]-[hash]",
    bundle: true,
    splitting: true,
    platform: "node",
    format: "esm",
    target: "node24",
    // Whitespace and syntax only: identifiers keep their names, for stack traces, the error types
    // in log lines and CPU profiles.
    minifyWhitespace: true,
    minifySyntax: true,
    // A source map beside each file: `node --enable-source-maps` gives stack traces the sources'
    // files and lines, and bench/profile.ts reads CPU profiles through them.
    sourcemap: "linked",
    external: EXTERNAL,
    // Bundled CommonJS packages call require() for Node's built-in modules.
    banner: {
      js: 'import { createRequire as __createRequire } from "node:module"; const require = __createRequire(import.meta.url);',
    },
    logLevel: "warning",
  });
  await cp(path.join(repoRoot, "gen", "descriptor"), path.join(outDir, "gen", "descriptor"), {
    recursive: true,
  });
}
