// Where a CreateOrder's time goes at concurrency 1: every call traced, its spans received over
// OTLP/gRPC, each step's median over the calls. Run by `npm run bench -- --latency
// [--duration S] [--out DIR]`, on the development profile and the production shape, with the
// services compiled as the image runs them; the report lands in DIR (bench/results).
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { parseArgs } from "node:util";
import { DEV_CERTS_DIR } from "../kit/security/security.js";
import { launchAccess } from "../scripts/lib/banner.js";
import { signToken } from "../scripts/lib/credentials.js";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { fleetPlan } from "../scripts/lib/plan.js";
import { freePorts } from "../scripts/lib/ports.js";
import { seedBench } from "../scripts/lib/seed.js";
import { Supervisor } from "../scripts/lib/supervisor.js";
import { registry, type ServiceName } from "../services/registry.js";
import { type ReceivedSpan, startOtlpReceiver } from "../test/helpers/otlp.js";
import { buildDist } from "./lib/build.js";
import { runLoad } from "./lib/ghz.js";
import { breakdown, isTransaction, type LatencyRun } from "./lib/latency.js";
import { reportName } from "./lib/report-name.js";
import { targetById } from "./lib/targets.js";

const log = (message: string) => console.log(`bench: ${message}`);

const ROOT = "shop.order.v1.OrderService/CreateOrder";

const PROFILES = [
  { fleet: "plaintext", target: "create-direct", title: "Development profile (plaintext)" },
  {
    fleet: "tls",
    target: "create-direct-tls",
    title: "Production shape (mutual TLS on every hop, tokens checked)",
  },
] as const;

/** One profile's fleet, loaded at c=1 with every call traced; its spans, once they are in. */
async function measure(
  profile: (typeof PROFILES)[number],
  dir: string,
  otlp: string,
  spans: () => ReceivedSpan[],
  warmupS: number,
  durationS: number,
): Promise<LatencyRun> {
  const ports = await freePorts(registry.names.length);
  const plan = fleetPlan({
    dataDir: path.join(dir, profile.fleet),
    ports: Object.fromEntries(
      registry.names.map((name, i) => [name, [ports[i] as number]]),
    ) as Record<ServiceName, number[]>,
    ...(profile.fleet === "tls" && { tls: DEV_CERTS_DIR }),
  });
  const supervisor = new Supervisor();
  try {
    log(`${profile.fleet}: starting ${registry.names.join(", ")} with every call traced`);
    await supervisor.launch(plan, {
      portHint: "a port the bench picked was taken meanwhile; run it again",
      quiet: true,
      runtime: "compiled",
      env: {
        OTEL_EXPORTER_OTLP_ENDPOINT: otlp,
        OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
        OTEL_TRACES_SAMPLER: "parentbased_always_on",
        OTEL_BSP_SCHEDULE_DELAY: "200",
      },
    });
    const seeded = await seedBench(
      { user: plan.addresses.user[0] as string, product: plan.addresses.product[0] as string },
      await launchAccess(plan),
    );
    const token = await signToken({ user: seeded.userId, ttlSeconds: 3_600 });
    const order = plan.addresses.order[0] as string;
    const spec = targetById(profile.target).call({
      addresses: { order, "tls-order": order },
      fleets: { [profile.fleet]: { ...seeded, token } },
      certs: DEV_CERTS_DIR,
    });
    const load = (seconds: number, file: string) =>
      runLoad(spec, {
        ghz: tool("ghz"),
        address: order,
        concurrency: 1,
        durationS: seconds,
        outFile: path.join(dir, file),
      });
    if (warmupS > 0) await load(warmupS, "warmup.json");
    // Only traces that begin in the measured run count: the warm-up's are older.
    const from = BigInt(Date.now()) * 1_000_000n;
    const measured = await load(durationS, "ghz.json");
    if (measured.errors > 0) {
      throw new Error(`CreateOrder failed: ${JSON.stringify(measured.errorSamples)}`);
    }
    // Stopping the services exports the spans they still hold; then wait for the last to land.
    await supervisor.stop();
    for (let count = -1; count !== spans().length; ) {
      count = spans().length;
      await new Promise((resolve) => setTimeout(resolve, 500));
    }
    const result = breakdown(
      spans().filter((span) => BigInt(span.startTimeUnixNano) >= from),
      "order",
      ROOT,
    );
    log(
      `${profile.fleet}: ${measured.ok} calls, ${result.traces} traces, median ${result.rootMedianMs.toFixed(2)} ms`,
    );
    return {
      fleet: profile.fleet,
      title: profile.title,
      ghzP50Ms: measured.latencyMs.p50,
      calls: measured.ok,
      breakdown: result,
    };
  } finally {
    await supervisor.stop();
  }
}

const ms = (value: number | undefined) => (value === undefined ? "" : value.toFixed(2));

/** The report's section for one profile: the steps as a tree, and where the median went. */
function section(measured: LatencyRun): string[] {
  const { breakdown: result } = measured;
  const clients = result.steps.filter((step) => step.kind === "client");
  const outside = clients.reduce((sum, step) => sum + (step.outsideServerMs ?? 0), 0);
  const served = clients.reduce(
    (sum, step) => sum + step.medianMs - (step.outsideServerMs ?? 0),
    0,
  );
  const ownWrites = result.steps
    .filter((step) => step.service === "order" && isTransaction(step.name))
    .reduce((sum, step) => sum + step.medianMs, 0);
  // A transaction run while a call was in flight is not on the path the caller waits on.
  const ownAlone = ownWrites - result.ownAlongsideCallsMs;
  const rest = result.rootMedianMs - outside - served - ownAlone;
  return [
    `## ${measured.title}`,
    "",
    `${measured.calls.toLocaleString("en")} calls, ${result.traces.toLocaleString("en")} traces complete. ghz's p50: ${ms(measured.ghzP50Ms)} ms; the order's server span: ${ms(result.rootMedianMs)} ms (median).`,
    "",
    "| step | process | median ms | of it outside the called server, ms |",
    "|---|---|---:|---:|",
    ...result.steps.map(
      (step) =>
        `| ${"· ".repeat(step.depth)}${step.name} (${step.kind}) | ${step.service} | ${ms(step.medianMs)} | ${ms(step.outsideServerMs)} |`,
    ),
    "",
    `Sums of medians: the ${clients.length} calls order makes spend ${ms(served)} ms in the servers' spans and ${ms(outside)} ms outside them (both grpc-js ends, the kit's middleware around the spans, the kernel's switches between processes); order's own transactions ${ms(ownWrites)} ms, ${ms(result.ownAlongsideCallsMs)} ms of it while a call was in flight (off the path); the rest of order's handler and its middleware ${ms(rest)} ms.`,
    "",
  ];
}

async function main() {
  const { values } = parseArgs({
    options: {
      latency: { type: "boolean" },
      duration: { type: "string", default: "20" },
      warmup: { type: "string", default: "3" },
      out: { type: "string", default: path.join(repoRoot, "bench", "results") },
    },
  });
  const durationS = Number.parseFloat(values.duration as string);
  const warmupS = Number.parseFloat(values.warmup as string);
  if (!existsSync(tool("ghz"))) throw new Error(`${tool("ghz")} is missing; run \`npm run tools\``);
  log("building dist/ (npm run build)");
  buildDist();
  const dir = await mkdtemp(path.join(os.tmpdir(), "shopmesh-bench-latency-"));
  const receiver = await startOtlpReceiver();
  try {
    const spans = () => receiver.spans();
    const measured: LatencyRun[] = [];
    for (const profile of PROFILES) {
      measured.push(await measure(profile, dir, receiver.endpoint, spans, warmupS, durationS));
    }
    const date = new Date().toISOString().slice(0, 10);
    const lines = [
      `# Where a CreateOrder's time goes — ${date}`,
      "",
      `CreateOrder straight to the order service at concurrency 1 for ${durationS} s per profile (after ${warmupS} s of warm-up), the services compiled as the image runs them, on ${os.cpus().length} cores shared by ghz, the OTLP receiver and the services. Every call is traced (\`OTEL_TRACES_SAMPLER=parentbased_always_on\`) and its spans received over OTLP/gRPC; each step is the median over the traces. A client span's time outside the server span it caused is what the hop costs beyond the called handler. Tracing every call costs time itself, so ghz's p50 here is above the main report's. \`npm run bench -- --latency\`.`,
      "",
      ...measured.flatMap(section),
    ];
    await mkdir(values.out as string, { recursive: true });
    const out = values.out as string;
    const file = path.join(out, `${reportName(out, new Date(), "latency")}.md`);
    await writeFile(file, lines.join("\n"));
    await writeFile(file.replace(/\.md$/, ".json"), `${JSON.stringify(measured, null, 2)}\n`);
    console.log(lines.join("\n"));
    log(`wrote ${path.relative(process.cwd(), file).replace(/\.md$/, ".{md,json}")}`);
  } finally {
    await receiver.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
