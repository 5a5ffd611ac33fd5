// The markdown report of a run: setup, results, resources, ratios, goals, and the noise.
import { type BenchResults, cpuPerCallMs, findRun, type RunResult } from "./results.js";
import type { StartupResult } from "./startup.js";
import { type ProcessName, TARGETS } from "./targets.js";

const n0 = (value: number) => Math.round(value).toLocaleString("en-US");
const n1 = (value: number) => value.toFixed(1);
const n2 = (value: number) => value.toFixed(2);
const table = (header: string[], rows: string[][]) =>
  [
    `| ${header.join(" | ")} |`,
    `|${header.map((_h, i) => (i === 0 ? "---" : "---:")).join("|")}|`,
    ...rows.map((row) => `| ${row.join(" | ")} |`),
  ].join("\n");

function resultsTable(runs: readonly RunResult[]): string {
  return table(
    ["target", "c", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "calls"],
    runs.map((run) => [
      run.label,
      String(run.concurrency),
      n0(run.rps),
      n2(run.latencyMs.p50),
      n2(run.latencyMs.p95),
      n2(run.latencyMs.p99),
      run.errors === 0 ? "0" : `**${run.errors}**`,
      n0(run.calls),
    ]),
  );
}

function resourceTable(runs: readonly RunResult[]): string {
  const names = [...new Set(runs.flatMap((run) => Object.keys(run.processes)))];
  const header = ["target", "c", ...names.map((name) => `${name} CPU s (%) / peak MiB`)];
  const rows = runs.map((run) => [
    run.label,
    String(run.concurrency),
    ...names.map((name) => {
      const usage = run.processes[name as keyof typeof run.processes];
      return usage ? `${n2(usage.cpuS)} (${n0(usage.cpuPct)}%) / ${n0(usage.peakRssMb)}` : "";
    }),
  ]);
  return table(header, rows);
}

function costTable(runs: readonly RunResult[]): string {
  return table(
    [
      "target",
      "c",
      "service CPU ms per call",
      "ghz CPU s",
      "harness CPU s",
      "unrelated CPU s",
      "host steal s",
      "machine busy",
    ],
    runs.map((run) => {
      const serviceCpu = Object.values(run.processes).reduce((sum, usage) => sum + usage.cpuS, 0);
      return [
        run.label,
        String(run.concurrency),
        run.ok > 0 ? n2((serviceCpu * 1000) / run.ok) : "",
        n2(run.other.ghzCpuS),
        n2(run.other.harnessCpuS),
        n2(run.other.unrelatedCpuS),
        run.other.stealS === undefined ? "" : n2(run.other.stealS),
        `${n0(run.other.machineBusyPct)}%`,
      ];
    }),
  );
}

function cpuPerCallTable(runs: readonly RunResult[]): string {
  const paths = new Map(TARGETS.map((target) => [target.id, target.path]));
  const names = [...new Set(runs.flatMap((run) => paths.get(run.target) ?? []))];
  return table(
    ["target", "c", "all processes", ...names],
    runs.map((run) => {
      const path = paths.get(run.target) ?? [];
      const total = cpuPerCallMs(run, path);
      return [
        run.label,
        String(run.concurrency),
        total === undefined ? "" : n2(total),
        ...names.map((name) => {
          const one = path.includes(name) ? cpuPerCallMs(run, [name]) : undefined;
          return one === undefined ? "" : n2(one);
        }),
      ];
    }),
  );
}

/** Each process's garbage collection per call, for a run with --gc. */
function gcSection(runs: readonly RunResult[]): string[] {
  const counted = runs.filter((run) => Object.values(run.processes).some((usage) => usage.gc));
  if (counted.length === 0) return [];
  const paths = new Map(TARGETS.map((target) => [target.id, target.path]));
  const names = [...new Set(counted.flatMap((run) => paths.get(run.target) ?? []))];
  const cell = (run: RunResult, name: ProcessName) => {
    const gc = run.processes[name]?.gc;
    if (!gc || run.ok === 0) return "";
    const perCall = (value: number) => value / run.ok;
    return `${n1(perCall(gc.allocatedBytes) / 1000)} KB · ${n2(perCall(gc.pauseMs) * 1000)} µs · ${n1(perCall(gc.major) * 1000)}`;
  };
  return [
    "## Garbage collection per call, per process",
    "",
    "Per successful call, in each Node process on the target's path: KB allocated on V8's heap · µs of garbage collection on its main thread · major collections (mark-compacts of the whole heap) per 1,000 calls. V8's helper threads collect beside the main thread; their CPU is in the table above, not here.",
    "",
    table(
      ["target", "c", ...names],
      counted.map((run) => [
        run.label,
        String(run.concurrency),
        ...names.map((name) =>
          (paths.get(run.target) ?? []).includes(name) ? cell(run, name) : "",
        ),
      ]),
    ),
    "",
  ];
}

function soakSection(results: BenchResults): string[] {
  const { soak } = results;
  if (!soak) return [];
  return [
    "## Memory over a long run",
    "",
    `${n0(soak.calls)} calls of \`${soak.target}\` at c=${soak.concurrency}, then ${n0(soak.calls)} more (${soak.errors} failed); RSS (VmRSS) of each process after each half${soak.quietS ? `, and after ${soak.quietS} s without calls` : ""}.`,
    "",
    ...Object.entries(soak.errorSamples ?? {}).map(
      ([sample, count]) => `- failed ${n0(count)}×: ${sample}`,
    ),
    "",
    table(
      [
        "process",
        "RSS after the first half, MiB",
        "after the second, MiB",
        "of which anonymous",
        "growth",
        ...(soak.quietS ? [`after ${soak.quietS} s without calls, MiB`] : []),
      ],
      Object.entries(soak.rssMb).map(([name, rss]) => [
        name,
        n1(rss.first),
        n1(rss.second),
        n1(rss.secondAnon),
        `${n1((100 * (rss.second - rss.first)) / rss.first)}%`,
        ...(soak.quietS ? [rss.quiet === undefined ? "–" : n1(rss.quiet)] : []),
      ]),
    ),
    "",
  ];
}

function startupTable(startup: readonly StartupResult[]): string {
  return table(
    ["service", "runtime", "to SERVING, median", "slowest", "idle RSS", "of which anonymous"],
    startup.map((result) => [
      result.service,
      result.runtime,
      `${n0(result.servingMs.median)} ms`,
      `${n0(result.servingMs.max)} ms`,
      `${n1(result.idleRssMb)} MB`,
      `${n1(result.idleAnonMb)} MB`,
    ]),
  );
}

/** GetProduct and CreateOrder on each storage side by side: requests/s and p50 per level. */
function storageTable(results: BenchResults): string | undefined {
  const columns = [
    { suffix: "", name: "better-sqlite3 (default)" },
    { suffix: "-sqlite3", name: "sqlite3" },
    { suffix: "-pg", name: "PostgreSQL" },
  ];
  const rows: string[][] = [];
  for (const base of ["get-direct", "create-direct"]) {
    for (const concurrency of results.settings.concurrency) {
      const cells = columns.map(({ suffix }) => {
        const run = findRun(results.runs, base + suffix, concurrency);
        return run ? `${n0(run.rps)} req/s · p50 ${n2(run.latencyMs.p50)} ms` : "";
      });
      if (cells.filter(Boolean).length < 2) continue;
      const label = TARGETS.find((target) => target.id === base)?.label ?? base;
      rows.push([label, String(concurrency), ...cells]);
    }
  }
  if (rows.length === 0) return undefined;
  return table(["call", "c", ...columns.map((column) => column.name)], rows);
}

export function markdownReport(results: BenchResults, chartFile: string): string {
  const { machine, settings } = results;
  const targetLines = TARGETS.filter((t) => settings.targets.includes(t.id)).map(
    (t) => `- **${t.label}** (\`${t.id}\`): ${t.description}.`,
  );
  const ratioRows = results.ratios.map((ratio) => [
    ratio.name,
    String(ratio.concurrency),
    n2(ratio.value),
  ]);
  const goalRows = results.goals.map((goal) => [
    goal.name,
    `${goal.comparison} ${goal.limit}`,
    goal.measured === undefined ? "not measured" : n2(goal.measured),
    goal.met === undefined ? "—" : goal.met ? "met" : "**not met**",
    goal.bare === undefined ? "—" : n2(goal.bare),
  ]);
  const errors = results.runs.filter((run) => run.errors > 0);
  const unrelated = results.runs.reduce((sum, run) => sum + run.other.unrelatedCpuS, 0);
  const steal = results.runs.reduce((sum, run) => sum + (run.other.stealS ?? 0), 0);
  const measuredS = results.runs.reduce((sum, run) => sum + run.elapsedS, 0);

  return [
    `# shopmesh benchmark — ${results.date.slice(0, 19).replace("T", " ")} UTC (${results.mode})`,
    "",
    "## Machine and setup",
    "",
    `- **${machine.cores} CPU cores** (${machine.cpuModel}), ${n1(machine.memoryGb)} GiB RAM, Linux ${machine.kernel}.`,
    `- Node ${machine.node}, ghz ${machine.ghz}, Envoy ${machine.envoy}.`,
    `- ${settings.durationS} s per target and concurrency (after a ${settings.warmupS} s warm-up per target at the highest concurrency); concurrency ${settings.concurrency.join(", ")}; ghz over one HTTP/2 connection with \`--cpus ${settings.ghzCpus}\`.`,
    `- One replica of each service, each its own Node process started through the same supervisor as \`npm start\`, ${settings.runtime === "tsx" ? "its TypeScript run through tsx as `npm start` does" : "as compiled JavaScript (`node dist/services/main.js`) as the production image runs it"}, on real SQLite files (WAL, better-sqlite3) in a fresh temp directory.`,
    settings.targets.some((id) => id.endsWith("-sqlite3"))
      ? "- The `sqlite3` targets call a second fleet of the same services on SQLite through the sqlite3 driver (`SHOP_SQLITE_DRIVER=sqlite3`)."
      : "",
    settings.targets.some((id) => id.endsWith("-pg"))
      ? `- The PostgreSQL targets call a third fleet on PostgreSQL ${machine.postgres ?? ""}, a local server the run starts (\`scripts/lib/postgres.ts\`), with its default settings: a commit waits for the disk, as a write on SQLite does before it answers (\`SHOP_SQLITE_SYNC\`). The server's CPU counts its connection processes.`
      : "",
    `- Services log at \`${settings.logLevel}\`: one JSON line per RPC, written by each service to its log file (its stdout is the file; the harness relays only stderr). That cost is part of the measured service.`,
    machine.envoy === "not run"
      ? "- Envoy was not part of this run."
      : `- Envoy runs the repo's front-door config (\`deploy/envoy/config.ts\`: transcoder, gRPC-Web, CORS, JSON access log to a file, retries) with \`--concurrency ${settings.envoyConcurrency}\`: ghz uses one connection, so a second worker would sit idle and only compete for the ${machine.cores} cores.`,
    `- Everything — load generator, Envoy, services — shares the same ${machine.cores} cores, so absolute numbers are bounded by the machine and by ghz itself; compare ratios taken within one run.`,
    settings.cpuProfile
      ? "- **The services ran with `--cpu-prof`**: numbers are lower than usual."
      : "",
    settings.gc
      ? "- The Node processes counted their garbage collection (`--gc`, `bench/gc-stats.mjs`), at about 50 µs of CPU per collection: under 0.5% of a service's CPU per call here."
      : "",
    "",
    "Targets:",
    "",
    ...targetLines,
    "",
    `![throughput and p99 per target](${chartFile})`,
    "",
    "## Results",
    "",
    "req/s counts successful calls only; latencies are of successful calls; calls still in flight when the time is up are not counted.",
    "",
    resultsTable(results.runs),
    "",
    errors.length
      ? `Errors: ${errors
          .map(
            (run) =>
              `${run.label} c=${run.concurrency}: ${Object.entries(run.errorSamples)
                .map(([message, count]) => `${count}× ${message}`)
                .join("; ")}`,
          )
          .join(" · ")}`
      : "No call failed.",
    "",
    ...(storageTable(results)
      ? [
          "## Storage",
          "",
          "The same direct calls on each storage, each on a fleet of its own, in this run.",
          "",
          storageTable(results) as string,
          "",
        ]
      : []),
    "## Ratios",
    "",
    "Throughput ratios within this run (1.00 = the same requests/s).",
    "",
    table(["ratio", "c", "value"], ratioRows),
    "",
    "## Goals",
    "",
    "Judged on the production shape (`-tls` targets: mutual TLS on every hop, tokens checked, a log line per call); *bare* is the same figure on the plaintext development profile, so the price of those features shows. Start and idle memory: compiled JavaScript (what the image runs) against tsx (what `npm start` runs). A goal is *not measured* when the run left out the targets or concurrency it needs.",
    "",
    table(["goal", "target", "production shape", "", "bare (development profile)"], goalRows),
    "",
    "## CPU per call, per process",
    "",
    "CPU milliseconds (user + system, all threads, from `/proc`) each process on the target's path spent per successful call. Robust on a shared machine, unlike throughput.",
    "",
    cpuPerCallTable(results.runs),
    "",
    ...gcSection(results.runs),
    "## Start and idle memory",
    "",
    results.startup.length
      ? `Each service started ${settings.startupRuns} times on its own (after one untimed start that creates its database), from spawn to the first grpc.health.v1 answer SERVING for its proto service; RSS (VmRSS, MB of 10^6 bytes) after ${settings.idleS} s without calls. *compiled* is what the image runs (\`node dist/services/main.js\`, \`npm run build\`), *tsx* what \`npm start\` runs.`
      : "Not measured in this run (`--startup-runs 0`).",
    "",
    results.startup.length ? startupTable(results.startup) : "",
    "",
    ...soakSection(results),
    "## Resources per process",
    "",
    "CPU seconds (user + system, all threads) during each measured run from `/proc/<pid>/stat`, as a share of one core; peak RSS from `/proc/<pid>/status` VmHWM, reset before each run.",
    "",
    resourceTable(results.runs),
    "",
    "## What else the run measured",
    "",
    `The machine was not idle: 1-minute load average ${n2(machine.loadAverage.before)} before the run and ${n2(machine.loadAverage.after)} after. Over the ${n0(measuredS)} s of measured runs, processes unrelated to the benchmark used ${n1(unrelated)} CPU s (${n0((100 * unrelated) / Math.max(1, measuredS * machine.cores))}% of the machine), and the hypervisor held back ${n1(steal)} CPU s (${n0((100 * steal) / Math.max(1, measuredS * machine.cores))}%) while the machine had work. CPU per call can rise with steal, so compare runs with similar steal.`,
    "",
    costTable(results.runs),
    "",
    "- *service CPU ms per call*: CPU of every process the bench started, divided by successful calls — the cost of one call across the path.",
    "- *ghz*: the load generator's own CPU (polled; slightly low). *harness*: this process, which pipes the services' logs to files.",
    "- *unrelated*: machine busy time minus all of the above and steal — other work on the machine while the run was measured.",
    "- *host steal*: time the hypervisor ran other guests while this one had work (`/proc/stat`).",
    "",
    `Whole run: ${n0(results.wallS)} s including startup and seeding.`,
    "",
  ]
    .filter((line, i, lines) => !(line === "" && lines[i - 1] === ""))
    .join("\n");
}
