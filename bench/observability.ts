// The price of observability, in one run: GetProduct straight to a product replica (c=16) on five
// replicas that share one database and differ only in what they observe. Run by
// `npm run bench -- --observability [--duration S]`; the report lands in bench/results/.
//
//   baseline          SHOP_METRICS=false, OTEL_SDK_DISABLED=true: neither metrics nor trace ids
//   metrics           the Prometheus middleware and store metrics, no tracing
//   trace ids         metrics, and a span context per call for the log lines, nothing exported
//                     (what a service does with no OTEL_* variable set: the default)
//   tracing default   metrics, spans exported over OTLP/gRPC at the default sampling share
//   tracing 100 %     metrics, every span exported (OTEL_TRACES_SAMPLER=parentbased_always_on)
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { DEFAULT_SAMPLE_RATIO } from "../kit/observability/tracing.js";
import { launchAccess } from "../scripts/lib/banner.js";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { fleetPlan } from "../scripts/lib/plan.js";
import { freePorts } from "../scripts/lib/ports.js";
import { seedBench } from "../scripts/lib/seed.js";
import { Supervisor } from "../scripts/lib/supervisor.js";
import { registry, type ServiceName } from "../services/registry.js";
import { runLoad } from "./lib/ghz.js";
import { reportName } from "./lib/report-name.js";
import { shopProtoset } from "./lib/targets.js";

const log = (message: string) => console.log(`bench: ${message}`);

async function startReceiver(): Promise<{ endpoint: string; stop(): Promise<string> }> {
  const python = path.join(repoRoot, ".tools", "otlp-venv", "bin", "python");
  const child: ChildProcess = spawn(
    python,
    [path.join(repoRoot, "test", "helpers", "otlp-receiver.py"), "0", "--count"],
    { stdio: ["pipe", "pipe", "inherit"] },
  );
  let out = "";
  child.stdout?.on("data", (chunk: Buffer) => {
    out += chunk;
  });
  for (let i = 0; i < 100 && !/listening (\d+)/.test(out); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const port = /listening (\d+)/.exec(out)?.[1];
  if (!port) throw new Error(`the OTLP receiver did not start (npm run tools otlp): ${out}`);
  return {
    endpoint: `http://127.0.0.1:${port}`,
    async stop() {
      const exited = once(child, "exit");
      child.kill("SIGTERM");
      await exited;
      return /spans (\d+)/.exec(out)?.[1] ?? "?";
    },
  };
}

interface Variant {
  id: string;
  label: string;
  env: (otlp: string) => Record<string, string>;
}

const VARIANTS: Variant[] = [
  {
    id: "baseline",
    label: "no metrics, no tracing",
    env: () => ({ SHOP_METRICS: "false", OTEL_SDK_DISABLED: "true" }),
  },
  { id: "metrics", label: "metrics", env: () => ({ OTEL_SDK_DISABLED: "true" }) },
  { id: "trace-ids", label: "metrics + trace ids, nothing exported (default)", env: () => ({}) },
  {
    id: "tracing-default",
    label: `metrics + tracing, ${DEFAULT_SAMPLE_RATIO * 100} % sampled and exported`,
    env: (otlp) => ({ OTEL_EXPORTER_OTLP_ENDPOINT: otlp, OTEL_EXPORTER_OTLP_PROTOCOL: "grpc" }),
  },
  {
    id: "tracing-100",
    label: "metrics + tracing, 100 % sampled and exported",
    env: (otlp) => ({
      OTEL_EXPORTER_OTLP_ENDPOINT: otlp,
      OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
      OTEL_TRACES_SAMPLER: "parentbased_always_on",
    }),
  },
];

async function main() {
  const { values } = parseArgs({
    options: {
      observability: { type: "boolean" },
      duration: { type: "string", default: "5" },
      concurrency: { type: "string", default: "16" },
      rounds: { type: "string", default: "2" },
    },
  });
  const durationS = Number.parseFloat(values.duration as string);
  const concurrency = Number(values.concurrency);
  const rounds = Number(values.rounds);
  const dir = await mkdtemp(path.join(os.tmpdir(), "shopmesh-bench-observability-"));
  const supervisor = new Supervisor();
  const receiver = await startReceiver();
  try {
    const ports = await freePorts(registry.names.length - 1 + VARIANTS.length);
    const byService = Object.fromEntries(
      registry.names.map((name) => [
        name,
        name === "product" ? ports.splice(0, VARIANTS.length) : ports.splice(0, 1),
      ]),
    ) as Record<ServiceName, number[]>;
    const plan = fleetPlan({ dataDir: dir, ports: byService, numbered: true });
    // The product replicas differ only in what they observe.
    const products = plan.replicas.filter((replica) => replica.service === "product");
    for (const [i, replica] of products.entries()) {
      Object.assign(replica.env ?? {}, VARIANTS[i]?.env(receiver.endpoint));
    }
    log(`starting ${plan.replicas.length} replicas (product ×${VARIANTS.length})`);
    await supervisor.launch(plan, { portHint: "run it again", quiet: true });
    const { productId } = await seedBench(
      { user: plan.addresses.user[0] as string, product: plan.addresses.product[0] as string },
      await launchAccess(plan),
    );
    const spec = {
      call: "shop.product.v1.ProductService/GetProduct",
      schema: { protoset: shopProtoset },
      data: { product_id: productId },
    };
    const rps: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v.id, []]));
    const p50: Record<string, number[]> = Object.fromEntries(VARIANTS.map((v) => [v.id, []]));
    for (let round = 0; round < rounds; round++) {
      // Interleaved rounds, so a change in the machine's load falls on every variant alike.
      for (const [i, variant] of VARIANTS.entries()) {
        const address = plan.addresses.product[i] as string;
        const load = await runLoad(spec, {
          ghz: tool("ghz"),
          address,
          concurrency,
          durationS,
          outFile: path.join(dir, "ghz.json"),
        });
        if (load.errors > 0) throw new Error(`${variant.id}: ${JSON.stringify(load.errorSamples)}`);
        rps[variant.id]?.push(load.rps);
        p50[variant.id]?.push(load.latencyMs.p50);
        log(`${variant.id} round ${round + 1}: ${Math.round(load.rps)} req/s`);
      }
    }
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const base = mean(rps.baseline ?? [1]);
    const spans = await receiver.stop();
    const date = new Date().toISOString().slice(0, 10);
    const lines = [
      `# The price of observability — ${date}`,
      "",
      `GetProduct straight to a product replica, c=${concurrency}, ${durationS} s per bar, ${rounds} interleaved rounds, on ${os.cpus().length} cores shared by ghz, the OTLP receiver and the replicas. Each variant is its own replica on one shared database. \`npm run bench -- --observability\`.`,
      "",
      "| variant | req/s (mean) | ÷ baseline | p50 ms |",
      "|---|---:|---:|---:|",
      ...VARIANTS.map((variant) => {
        const r = mean(rps[variant.id] ?? [0]);
        return `| ${variant.label} | ${Math.round(r).toLocaleString("en")} | ${(r / base).toFixed(2)} | ${mean(p50[variant.id] ?? [0]).toFixed(2)} |`;
      }),
      "",
      `Spans received by the OTLP receiver: ${spans}. Rounds: ${JSON.stringify(rps)}.`,
      "",
    ];
    const out = path.join(repoRoot, "bench", "results");
    const file = path.join(out, `${reportName(out, new Date(), "observability")}.md`);
    await writeFile(file, lines.join("\n"));
    console.log(lines.join("\n"));
    log(`wrote ${path.relative(repoRoot, file)}`);
  } finally {
    await supervisor.stop();
    await receiver.stop().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
