// One ghz load run: a fixed concurrency for a fixed duration (or count), results as numbers.
import { spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile, rm } from "node:fs/promises";
import path from "node:path";
import { type ProcSample, pollProcess } from "./proc.js";

/** What to call: the method, how ghz learns its schema, and the request body. */
export interface CallSpec {
  /** `package.Service/Method`. */
  call: string;
  /** A compiled descriptor set (`--protoset`) or a .proto file (`--proto`). */
  schema: { protoset: string } | { proto: string };
  /** The request as JSON; ghz template functions such as {{newUUID}} run per call. */
  data: Record<string, unknown>;
  /** Metadata of every call, e.g. the authorization header. */
  metadata?: Record<string, string>;
  /** TLS: the CA to trust, and a client certificate for mutual TLS; plaintext without. */
  tls?: { ca: string; cert?: string; key?: string; serverName?: string };
}

export interface LoadOptions {
  ghz: string;
  address: string;
  concurrency: number;
  durationS: number;
  /** Stop after this many calls instead of after durationS. */
  total?: number;
  /** Where ghz writes its JSON report (deleted once read). */
  outFile: string;
  /** ghz's --cpus (Go's GOMAXPROCS); the machine's core count by default. */
  cpus?: number;
}

export interface LoadResult {
  /** Wall time of the run, seconds. */
  elapsedS: number;
  /** Calls that completed (OK or not); calls in flight at the end are not counted. */
  calls: number;
  ok: number;
  errors: number;
  /** Non-OK status codes and messages with their counts. */
  errorSamples: Record<string, number>;
  /** Successful calls per second. */
  rps: number;
  /** Latency of successful calls, milliseconds. */
  latencyMs: { avg: number; p50: number; p95: number; p99: number; max: number };
  /** The load generator's own CPU seconds (polled every 100 ms, so slightly low). */
  ghzCpuS: number;
}

interface GhzReport {
  count: number;
  total: number;
  average: number;
  slowest: number;
  errorDistribution?: Record<string, number> | null;
  statusCodeDistribution?: Record<string, number> | null;
  latencyDistribution?: { percentage: number; latency: number }[] | null;
}

const ms = (ns: number) => Math.round(ns / 1e3) / 1e3;

/** Runs ghz once and reads its JSON report. Throws when ghz fails (not when calls fail). */
export async function runLoad(spec: CallSpec, options: LoadOptions): Promise<LoadResult> {
  if (!existsSync(options.ghz)) {
    throw new Error(`${options.ghz} is missing: run \`npm run tools\` (or scripts/tools.sh ghz)`);
  }
  const schema =
    "protoset" in spec.schema
      ? ["--protoset", spec.schema.protoset]
      : ["--proto", spec.schema.proto, "--import-paths", path.dirname(spec.schema.proto)];
  const tls = spec.tls
    ? [
        ...["--cacert", spec.tls.ca],
        ...(spec.tls.cert && spec.tls.key ? ["--cert", spec.tls.cert, "--key", spec.tls.key] : []),
        ...(spec.tls.serverName ? ["--cname", spec.tls.serverName] : []),
      ]
    : ["--insecure"];
  const args = [
    ...tls,
    ...(spec.metadata ? ["--metadata", JSON.stringify(spec.metadata)] : []),
    ...schema,
    ...["--call", spec.call],
    ...["--data", JSON.stringify(spec.data)],
    ...["--concurrency", String(options.concurrency)],
    // One HTTP/2 connection, as one grpc-js client channel would use.
    ...["--connections", "1"],
    ...(options.total
      ? ["--total", String(options.total)]
      : [
          ...["--duration", `${Math.round(options.durationS * 1000)}ms`],
          // Calls still in flight when the time is up are neither counted nor reported as errors.
          ...["--duration-stop", "ignore"],
        ]),
    ...["--timeout", "20s"],
    ...(options.cpus ? ["--cpus", String(options.cpus)] : []),
    ...["--format", "json", "--output", options.outFile],
    options.address,
  ];
  const started = performance.now();
  const child = spawn(options.ghz, args, { stdio: ["ignore", "ignore", "pipe"] });
  const poll = child.pid ? pollProcess(child.pid) : undefined;
  let stderr = "";
  child.stderr?.setEncoding("utf8").on("data", (chunk: string) => {
    stderr = (stderr + chunk).slice(-4000);
  });
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once("error", reject);
    child.once("exit", (exit) => resolve(exit));
  });
  const cpu: ProcSample | undefined = poll?.stop();
  const elapsedS = (performance.now() - started) / 1000;
  if (code !== 0) throw new Error(`ghz ${spec.call} exited ${code}: ${stderr.trim()}`);

  const report = JSON.parse(await readFile(options.outFile, "utf8")) as GhzReport;
  await rm(options.outFile, { force: true });
  const statuses = report.statusCodeDistribution ?? {};
  const ok = statuses.OK ?? 0;
  const percentile = (p: number) =>
    ms(report.latencyDistribution?.find((entry) => entry.percentage === p)?.latency ?? 0);
  const totalS = report.total / 1e9;
  return {
    elapsedS,
    calls: report.count,
    ok,
    errors: report.count - ok,
    errorSamples: report.errorDistribution ?? {},
    rps: totalS > 0 ? ok / totalS : 0,
    latencyMs: {
      avg: ms(report.average),
      p50: percentile(50),
      p95: percentile(95),
      p99: percentile(99),
      max: ms(report.slowest),
    },
    ghzCpuS: cpu?.cpuS ?? 0,
  };
}
