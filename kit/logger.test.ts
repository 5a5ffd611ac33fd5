// The logger buffers lines: none may be lost however the process ends. Each case runs in a
// process of its own, as a service would, and reads what reached its stdout.
import test from "ava";
import { exec } from "../test/helpers/exec.js";

const LOGGER = new URL("./logger.ts", import.meta.url).href;

/** Runs `ending` after three lines were logged; returns the lines that reached stdout. */
async function linesWhen(ending: string): Promise<{ lines: unknown[]; code: number | null }> {
  const script = [
    `const { createLogger, flushLogger } = await import(${JSON.stringify(LOGGER)});`,
    `const logger = createLogger("logger-test");`,
    `for (let n = 1; n <= 3; n++) logger.info({ n }, "line");`,
    ending,
  ].join("\n");
  const result = await exec(process.execPath, [
    "--import",
    "tsx",
    "--input-type=module",
    "-e",
    script,
  ]);
  const lines = result.stdout
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as unknown);
  return { lines, code: result.code };
}

const ENDINGS = {
  "it runs out of work": "",
  "it calls process.exit": "process.exit(3);",
  "an exception is not caught": "setTimeout(() => { throw new Error('boom'); }, 1);",
  "flushLogger resolved, before exiting": "await flushLogger(logger); process.exit(0);",
};

for (const [how, ending] of Object.entries(ENDINGS)) {
  test(`every buffered line is written when ${how}`, async (t) => {
    const { lines } = await linesWhen(ending);
    t.deepEqual(
      lines.map((line) => (line as { n: number; service: string; msg: string }).n),
      [1, 2, 3],
    );
    t.like(lines[0], { service: "logger-test", msg: "line" });
  });
}
