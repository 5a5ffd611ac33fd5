// The storage variants run every registered service's handler suites: a suite missing from one
// would quietly run on one storage only.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { repoRoot } from "../../scripts/lib/launcher.js";
import { registry } from "../../services/registry.js";

const services = path.join(repoRoot, "services");
const suites = registry.names.flatMap((name) =>
  readdirSync(path.join(services, name))
    .filter((file) => file.endsWith(".test.ts"))
    .map((file) => `./${name}/${file.replace(/\.ts$/, ".js")}`),
);

for (const variant of ["handlers.postgres.test.ts", "handlers.sqlite3.test.ts"]) {
  test(`services/${variant} imports every registered service's handler suites`, (t) => {
    const imported = [
      ...readFileSync(path.join(services, variant), "utf8").matchAll(/^import "(\.\/[^"]+)";$/gm),
    ].map((match) => match[1]);
    t.deepEqual(imported.sort(), [...suites].sort());
  });
}
