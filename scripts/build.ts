// `npm run build`: the JavaScript the production image runs, in dist/. The compiler checks the
// types first (unless `--no-typecheck`); then each entry point (a service process, the migrate
// and seed scripts) is bundled with the packages it imports and minified. One file loads faster
// than hundreds of modules and holds far less source text in the heap: idle RSS and start-up
// time are in README "Deploy". Code loaded only on demand (an OTLP exporter) goes into chunks of
// its own under dist/chunks.
import { execFileSync } from "node:child_process";
import { cp, rm } from "node:fs/promises";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";

const repoRoot = fileURLToPath(new URL("..", import.meta.url));

/** Entry points, built to dist/<same path>.js. */
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

const dist = path.join(repoRoot, "dist");
await rm(dist, { recursive: true, force: true });
// `--no-typecheck`: the benchmark's builds, which measure the code rather than gate it.
if (!process.argv.includes("--no-typecheck")) {
  execFileSync("npx", ["tsc", "--noEmit", "-p", "tsconfig.build.json"], {
    cwd: repoRoot,
    stdio: "inherit",
  });
}
await build({
  absWorkingDir: repoRoot,
  entryPoints: ENTRY_POINTS,
  outbase: ".",
  outdir: dist,
  // Every output file sits one folder below dist/, so kit/descriptor.ts's `../gen/descriptor`
  // reaches dist/gen from any of them.
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
await cp(path.join(repoRoot, "gen", "descriptor"), path.join(dist, "gen", "descriptor"), {
  recursive: true,
});
