// Summarizes V8 .cpuprofile files (node --cpu-prof): the top functions by self time, by total
// (inclusive) time, and self time per package.
//
//   npm run bench -- --targets create-direct --concurrency 16 --duration 15 --cpu-prof /tmp/prof
//   npx tsx bench/profile.ts /tmp/prof/*.cpuprofile [--top 25] [--skip-ms 5000]
//
// --skip-ms leaves out the first milliseconds (startup, module loading). `npm run bench --
// --profile` does all of it for one target, with on-CPU samples from perf beside it.
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import { type CpuProfile, formatSummary, summarize } from "./lib/cpuprofile.js";

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    top: { type: "string", default: "20" },
    "skip-ms": { type: "string", default: "0" },
  },
});
if (positionals.length === 0) {
  console.error("usage: npx tsx bench/profile.ts FILE.cpuprofile... [--top N] [--skip-ms MS]");
  process.exit(2);
}
for (const file of positionals) {
  const profile = JSON.parse(readFileSync(file, "utf8")) as CpuProfile;
  const from = profile.startTime + Number(values["skip-ms"]) * 1000;
  console.log(
    [`== ${file}`, ...formatSummary(summarize(profile, from), Number(values.top)), ""].join("\n"),
  );
}
