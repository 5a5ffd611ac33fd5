import { spawn } from "node:child_process";
import { repoRoot, tool } from "../../scripts/lib/launcher.js";
import { ADMIN_TOKEN, authHeader } from "./credentials.js";

export interface ExecResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a command to completion (never through a shell, from the repo root by default) and
 * captures its output. stdin is closed from the start: a pipe to a child that never reads it
 * (grpcurl -d, python -c) can surface as an uncaught EPIPE.
 */
export function exec(
  command: string,
  args: readonly string[],
  options: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<ExecResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, {
      cwd: options.cwd ?? repoRoot,
      env: { ...process.env, ...options.env },
      timeout: options.timeoutMs ?? 60_000,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => {
      stdout += chunk;
    });
    child.stderr.on("data", (chunk) => {
      stderr += chunk;
    });
    child.on("error", reject);
    child.on("close", (code) => resolve({ code, stdout, stderr }));
  });
}

/**
 * One grpcurl call (over reflection) with a JSON body; resolves with the JSON reply and rejects
 * with grpcurl's stderr when it fails. `flags` go before -d, e.g. ["-H", "x-request-id: 1"];
 * `transport` is plaintext by default, e.g. ["-cacert", "ca.crt"] for Envoy's TLS listener. It
 * signs in as the tests' admin unless `flags` carry an authorization header.
 */
export async function grpcurl(
  address: string,
  method: string,
  body: object,
  flags: readonly string[] = [],
  transport: readonly string[] = ["-plaintext"],
) {
  const signed = flags.some((flag) => /^authorization:/i.test(flag));
  const result = await exec(tool("grpcurl"), [
    ...transport,
    ...(signed ? [] : ["-H", authHeader(ADMIN_TOKEN)]),
    ...flags,
    ...["-d", JSON.stringify(body)],
    address,
    method,
  ]);
  if (result.code !== 0) throw new Error(`${method} exited ${result.code}: ${result.stderr}`);
  return JSON.parse(result.stdout);
}
