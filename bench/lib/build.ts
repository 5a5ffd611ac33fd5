// The services as the production image runs them: compiled into dist/ by `npm run build`.
import { spawnSync } from "node:child_process";
import { repoRoot } from "../../scripts/lib/launcher.js";

/**
 * Runs `npm run build` in a checkout (this one by default), without its typecheck: a benchmark
 * measures the code, and CI gates it. Throws with the build's errors when it fails.
 */
export function buildDist(root = repoRoot): void {
  const build = spawnSync("npm", ["run", "build", "--", "--no-typecheck"], {
    cwd: root,
    encoding: "utf8",
  });
  if (build.status !== 0) throw new Error(`npm run build failed: ${build.stderr}`);
}
