// The services as the production image runs them: compiled into dist/ by `npm run build`.
import { spawnSync } from "node:child_process";
import { repoRoot } from "../../scripts/lib/launcher.js";

/** Runs `npm run build` in a checkout (this one by default); throws with its errors when it fails. */
export function buildDist(root = repoRoot): void {
  const build = spawnSync("npm", ["run", "build"], { cwd: root, encoding: "utf8" });
  if (build.status !== 0) throw new Error(`npm run build failed: ${build.stderr}`);
}
