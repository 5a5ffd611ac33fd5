// `npm run build`: the JavaScript the production image runs, in dist/ (scripts/lib/build.ts).
// The compiler checks the types first, unless `--no-typecheck`: the benchmark's builds measure
// the code rather than gate it.
import { execFileSync } from "node:child_process";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { bundleServices } from "./lib/build.js";

// Not launcher.ts's: importing it would load grpc-js and the kit for one path.
const repoRoot = fileURLToPath(new URL("..", import.meta.url));

if (!process.argv.includes("--no-typecheck")) {
  execFileSync("npx", ["tsc", "--noEmit", "-p", "tsconfig.build.json"], {
    cwd: repoRoot,
    stdio: "inherit",
  });
}
await bundleServices(path.join(repoRoot, "dist"));
