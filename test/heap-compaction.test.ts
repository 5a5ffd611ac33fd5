import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { NODE_OPTIONS } from "../deploy/settings.js";
import { serviceProcess } from "./helpers/build.js";
import { eventually } from "./helpers/eventually.js";

for (const [how, nodeOptions, compacts] of [
  ["with the image's Node options", NODE_OPTIONS, true],
  ["without --expose-gc", NODE_OPTIONS.replace("--expose-gc", "").trim(), false],
] as const) {
  test(`a service started ${how} ${compacts ? "compacts and counts" : "neither compacts nor counts"} a compaction of its heap as it begins to serve`, async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-heap-compaction-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const child = await serviceProcess(
      t,
      {
        NODE_OPTIONS: nodeOptions,
        SHOP_SERVICE: "user",
        SHOP_PORT: "0",
        SHOP_METRICS_PORT: "0",
        SHOP_DATA_DIR: dir,
        SHOP_LOG_LEVEL: "info",
      },
      ["ignore", "pipe", "inherit"],
    );
    let stdout = "";
    child.stdout?.on("data", (chunk) => {
      stdout += chunk;
    });
    const serving = await eventually(
      "the user service's serving line",
      () =>
        stdout
          .split("\n")
          .filter(Boolean)
          .map(
            (line) =>
              JSON.parse(line) as { msg: string; heap_compact_ms?: number; metrics: string },
          )
          .find((line) => line.msg === "serving"),
      { timeoutMs: 30_000, intervalMs: 100 },
    );
    const metrics = await (await fetch(`http://${serving.metrics}/metrics`)).text();
    const compactions = metrics
      .split("\n")
      .filter((line) => line.includes('task="heap_compaction"'));
    if (compacts) {
      t.true(Number.isInteger(serving.heap_compact_ms), JSON.stringify(serving));
      t.true(compactions.includes('shop_background_runs_total{task="heap_compaction"} 1'));
      t.true(compactions.includes('shop_background_run_seconds_count{task="heap_compaction"} 1'));
      t.true(compactions.includes('shop_background_failures_total{task="heap_compaction"} 0'));
    } else {
      t.false("heap_compact_ms" in serving, JSON.stringify(serving));
      t.deepEqual(compactions, [], "no compaction series without --expose-gc");
    }
  });
}
