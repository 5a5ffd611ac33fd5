// Envoy's own check of every committed front door (part of `npm run deploy:validate`): a
// google.api.http template the transcoder cannot route, or an option this Envoy release refuses,
// fails here instead of when a deployment starts. The containers' credentials are stood in for
// by a throwaway development set.
//
//   npx tsx scripts/validate-envoy.ts [--descriptor FILE]   (the descriptor set to check against)
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { composeTopology, type EnvoyTopology, localTopology } from "../deploy/envoy/topology.js";
import { kubernetesTopology } from "../deploy/kubernetes/envoy.js";
import { descriptorPath } from "../kit/descriptor.js";
import { makeCredentials } from "./lib/credentials.js";
import { validateEnvoy, withLocalPaths } from "./lib/envoy-validate.js";

const { values } = parseArgs({ options: { descriptor: { type: "string" } } });
const descriptor = path.resolve(values.descriptor ?? descriptorPath);

const CONFIGS: ReadonlyArray<readonly [file: string, topology: EnvoyTopology]> = [
  ["deploy/envoy/envoy.yaml", localTopology()],
  ["deploy/envoy/envoy.compose.yaml", composeTopology()],
  ["deploy/k8s/base/envoy/envoy.yaml", kubernetesTopology()],
];

const scratch = mkdtempSync(path.join(tmpdir(), "shopmesh-envoy-validate-"));
try {
  const credentials = path.join(scratch, "credentials");
  await makeCredentials(credentials, { identities: ["edge"] });
  for (const [file, topology] of CONFIGS) {
    const local = path.join(scratch, file.replaceAll("/", "_"));
    const text = readFileSync(file, "utf8");
    writeFileSync(local, withLocalPaths(text, topology, credentials, descriptor));
    const { ok, output } = await validateEnvoy(local);
    if (ok) console.log(`== ${file}: Envoy accepts it`);
    else console.error(`== ${file}: Envoy refuses it\n${output}`);
    if (!ok) process.exitCode = 1;
  }
} finally {
  rmSync(scratch, { recursive: true, force: true });
}
