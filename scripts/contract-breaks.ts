// tsx scripts/contract-breaks.ts RELEASED.binpb CURRENT.binpb: the breaking gate's own checks,
// after buf's (scripts/breaking.sh). Prints one line per break and exits 1 if there is any.
import { readFileSync } from "node:fs";
import { contractBreaks, readContract } from "./lib/contract-breaks.js";

const [released, current] = process.argv.slice(2);
if (!released || !current) {
  console.error("usage: tsx scripts/contract-breaks.ts RELEASED.binpb CURRENT.binpb");
  process.exit(2);
}
const breaks = contractBreaks(
  readContract(readFileSync(released)),
  readContract(readFileSync(current)),
);
for (const line of breaks) console.error(line);
process.exitCode = breaks.length > 0 ? 1 : 0;
