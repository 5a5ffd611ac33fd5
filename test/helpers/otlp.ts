// The trace test's OTLP/gRPC receiver (test/helpers/otlp-receiver.py, on the official
// opentelemetry-proto stubs) as a child process: where it listens, and the spans it has received.
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import path from "node:path";
import { repoRoot } from "../../scripts/lib/launcher.js";
import { eventually } from "./eventually.js";

/** One span as the receiver prints it (OTLP JSON field names, ids in hex). */
export interface ReceivedSpan {
  service: string;
  traceId: string;
  spanId: string;
  /** "" for a root span. */
  parentSpanId: string;
  name: string;
  kind: string;
  /** When it began and ended, ns since the epoch (a decimal string, as OTLP/JSON writes it). */
  startTimeUnixNano: string;
  endTimeUnixNano: string;
  attributes?: { key: string; value: Record<string, unknown> }[];
}

export interface OtlpReceiver {
  /** `http://127.0.0.1:<port>`, for OTEL_EXPORTER_OTLP_ENDPOINT. */
  endpoint: string;
  spans(): ReceivedSpan[];
  stop(): Promise<void>;
}

/** Starts the receiver on a free port (`npm run tools otlp` installs its venv). */
export async function startOtlpReceiver(): Promise<OtlpReceiver> {
  const python = path.join(repoRoot, ".tools", "otlp-venv", "bin", "python");
  const child: ChildProcess = spawn(
    python,
    [path.join(repoRoot, "test/helpers/otlp-receiver.py")],
    {
      stdio: ["pipe", "pipe", "pipe"],
    },
  );
  const spans: ReceivedSpan[] = [];
  let port: number | undefined;
  let errors = "";
  let rest = "";
  child.stderr?.on("data", (chunk: Buffer) => {
    errors = (errors + chunk).slice(-2000);
  });
  child.stdout?.on("data", (chunk: Buffer) => {
    const lines = (rest + chunk).split("\n");
    rest = lines.pop() ?? "";
    for (const line of lines) {
      const listening = /^listening (\d+)$/.exec(line);
      if (listening) port = Number(listening[1]);
      else if (line.startsWith("{")) spans.push(JSON.parse(line) as ReceivedSpan);
    }
  });
  const bound = await eventually("the OTLP receiver to listen", () => {
    if (child.exitCode !== null) throw new Error(`the OTLP receiver exited: ${errors}`);
    return port;
  });
  return {
    endpoint: `http://127.0.0.1:${bound}`,
    spans: () => [...spans],
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
    },
  };
}
