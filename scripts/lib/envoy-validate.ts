// Envoy's own check of a generated config (`envoy --mode validate`), which builds every filter:
// the transcoder's google.api.http templates, regexes, the options this Envoy release takes.
// Configs for compose and Kubernetes name paths inside their containers; withLocalPaths points
// them at files on this machine first.
import { execFile } from "node:child_process";
import { promisify } from "node:util";
import { parse, stringify } from "yaml";
import { type EnvoyTopology, edgeCredentials } from "../../deploy/envoy/topology.js";
import { descriptorPath } from "../../kit/descriptor.js";
import { envoyBinary } from "./envoy.js";
import { repoRoot } from "./launcher.js";

/**
 * `text`, a config generated from `topology`, reading the edge's credentials from `credentials`
 * (a folder `npm run certs` made) and the descriptor set from `descriptor`.
 */
export function withLocalPaths(
  text: string,
  topology: EnvoyTopology,
  credentials: string,
  descriptor = descriptorPath,
): string {
  const local = edgeCredentials(credentials);
  const paths = new Map([
    [topology.descriptorPath, descriptor],
    [topology.jwt.jwksPath, local.jwt.jwksPath],
  ]);
  if (topology.tls) {
    paths.set(topology.tls.cert, local.tls.cert);
    paths.set(topology.tls.key, local.tls.key);
    paths.set(topology.tls.ca, local.tls.ca);
  }
  const replace = (node: unknown): unknown => {
    if (typeof node === "string") return paths.get(node) ?? node;
    if (Array.isArray(node)) return node.map(replace);
    if (node && typeof node === "object") {
      return Object.fromEntries(Object.entries(node).map(([key, value]) => [key, replace(value)]));
    }
    return node;
  };
  return stringify(replace(parse(text)), { lineWidth: 0 });
}

/** Whether this Envoy accepts the config in `file`, run from the repo root, and what it said. */
export async function validateEnvoy(file: string): Promise<{ ok: boolean; output: string }> {
  const args = ["--mode", "validate", "-c", file, "-l", "critical"];
  try {
    const { stdout, stderr } = await promisify(execFile)(envoyBinary(), args, { cwd: repoRoot });
    return { ok: true, output: `${stdout}${stderr}` };
  } catch (error) {
    const {
      stdout = "",
      stderr = "",
      message,
    } = error as Error & { stdout?: string; stderr?: string };
    return { ok: false, output: `${stdout}${stderr}`.trim() || message };
  }
}
