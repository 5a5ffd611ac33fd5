// The logger buffers lines: none may be lost however the process ends. Each case runs in a
// process of its own, as a service would, and reads what reached its stdout. An error is logged
// without the row data PostgreSQL quotes in it.
import { spawn } from "node:child_process";
import { once } from "node:events";
import test from "ava";
import { exec } from "../../test/helpers/exec.js";
import { withoutRowData } from "./logger.js";

const LOGGER = new URL("./logger.ts", import.meta.url).href;

/** Runs `ending` after three lines were logged; returns the lines that reached stdout. */
async function linesWhen(ending: string): Promise<unknown[]> {
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
  return result.stdout
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line) as unknown);
}

const ENDINGS = {
  "it runs out of work": "",
  "it calls process.exit": "process.exit(3);",
  "an exception is not caught": "setTimeout(() => { throw new Error('boom'); }, 1);",
  "flushLogger resolved, before exiting": "await flushLogger(logger); process.exit(0);",
};

for (const [how, ending] of Object.entries(ENDINGS)) {
  test(`every buffered line is written when ${how}`, async (t) => {
    const lines = await linesWhen(ending);
    t.deepEqual(
      lines.map((line) => (line as { n: number; service: string; msg: string }).n),
      [1, 2, 3],
    );
    t.like(lines[0], { service: "logger-test", msg: "line" });
  });
}

test("a process whose stdout is gone still exits as it meant to", async (t) => {
  const script = [
    `const { createLogger } = await import(${JSON.stringify(LOGGER)});`,
    `const logger = createLogger("logger-test");`,
    // Long enough for the reader below to have closed its end of the pipe.
    "await new Promise((resolve) => setTimeout(resolve, 200));",
    `for (let n = 1; n <= 3; n++) logger.info({ n }, "line");`,
    "process.exit(3);",
  ].join("\n");
  const child = spawn(process.execPath, ["--import", "tsx", "--input-type=module", "-e", script], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  child.stdout.destroy();
  let stderr = "";
  child.stderr.on("data", (chunk) => {
    stderr += chunk;
  });
  const [code] = (await once(child, "close")) as [number | null];
  t.is(code, 3, stderr);
  t.is(stderr, "");
});

/**
 * Whether stdout's descriptor is non-blocking once `setup` ran ("true" or "false", or what went
 * wrong), in a process whose stdout is a pipe: node's own (a socket pair), or a shell's, as a
 * container runtime gives one.
 */
async function nonblockingAfter(setup: string, pipe: "node" | "shell"): Promise<string> {
  const script = [
    `const { createLogger } = await import(${JSON.stringify(LOGGER)});`,
    `const { readFileSync } = await import("node:fs");`,
    setup,
    `const fdinfo = readFileSync("/proc/self/fdinfo/1", "utf8");`,
    "const flags = Number.parseInt(/^flags:\\s+(\\d+)/m.exec(fdinfo)[1], 8);",
    "process.stderr.write(String((flags & 0o4000) !== 0));",
  ].join("\n");
  const args = ["--import", "tsx", "--input-type=module", "-e", script];
  const result =
    pipe === "node"
      ? await exec(process.execPath, args)
      : await exec("bash", ["-c", '"$@" | cat > /dev/null', "bash", process.execPath, ...args]);
  return result.stderr;
}

for (const pipe of ["node", "shell"] as const) {
  test(`a logger makes a stdout piped by ${pipe === "node" ? "node" : "a shell"} blocking again after process.stdout made it non-blocking`, async (t) => {
    // The condition the logger undoes, as knex causes it by reading process.stdout.isTTY.
    t.is(await nonblockingAfter("process.stdout.isTTY;", pipe), "true");
    t.is(
      await nonblockingAfter('process.stdout.isTTY; createLogger("logger-test");', pipe),
      "false",
    );
  });
}

test("an error's PostgreSQL detail stays out of its line; a thrown string or object is logged as is", (t) => {
  const row = "Key (email_key)=(private@example.com) already exists.";
  const refused = Object.assign(new Error("duplicate key value violates unique constraint"), {
    code: "23505",
    detail: row,
  });
  const logged = withoutRowData(refused) as Record<string, unknown>;
  t.is(logged.code, "23505");
  t.is(logged.detail, undefined);
  t.is(refused.detail, row, "the error itself is left alone");
  t.is(withoutRowData("a thrown string"), "a thrown string");
  const plain = { code: "23505", detail: row };
  t.deepEqual(withoutRowData(plain), { code: "23505" });
  t.is(plain.detail, row);
});
