// The services as the production image runs them: compiled into dist/ by `npm run build`.
import { spawnSync } from "node:child_process";
import { repoRoot } from "../../scripts/lib/launcher.js";

/** Runs `npm run build`; throws with its errors when it fails. */
export function buildDist(): void {
  const build = spawnSync("npm", ["run", "build"], { cwd: repoRoot, encoding: "utf8" });
  if (build.status !== 0) throw new Error(`npm run build failed: ${build.stderr}`);
}
