// The launcher's start error carries the process's last words, even when they are the end of a
// long stderr still unread when the process exits; its log file keeps every line; its stdout
// goes to that file without passing through the launcher; a program it started (Envoy,
// Prometheus) stops when the launcher is killed; and a service starts after those it calls.
import { spawn } from "node:child_process";
import { once } from "node:events";
import { statSync } from "node:fs";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import {
  LaunchError,
  type ProcessSpec,
  repoRoot,
  spawnLogged,
  waitReported,
} from "../scripts/lib/launcher.js";
import { startWaves } from "../scripts/lib/supervisor.js";
import { registry, type ServiceName } from "../services/registry.js";
import { eventually } from "./helpers/eventually.js";
import { alive } from "./helpers/launch.js";

test("a process that exits before serving is reported with the last lines of its stderr", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-launcher-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // More than a pipe holds (64 KiB), so the process can exit before its end is read.
  const script = `process.stderr.write("noise\\n".repeat(40000) + "SHOP_PORT: port 1 is taken\\n", () => process.exit(1));`;
  for (let i = 0; i < 5; i++) {
    const proc = spawnLogged("dies", process.execPath, ["-e", script], dir);
    const error = await t.throwsAsync(waitReported(proc, 10_000), { instanceOf: LaunchError });
    t.regex(error?.message ?? "", /failed to start: [\s\S]*SHOP_PORT: port 1 is taken/, `try ${i}`);
  }
});

test("what a process writes to stderr after its stdout closed still reaches its log", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-launcher-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // stdout ends at once; stderr goes on for longer than a pipe holds, then says its last word.
  const script = `require("fs").closeSync(1); setTimeout(() => process.stderr.write("noise\\n".repeat(40000) + "last words\\n"), 50);`;
  const proc = spawnLogged("late", process.execPath, ["-e", script], dir);
  // Were its stderr left unread, it would block on the write and never exit.
  t.teardown(() => proc.child.kill("SIGKILL"));
  const log = await eventually("the last line in the log", async () => {
    const text = await readFile(proc.logFile, "utf8");
    return text.endsWith("last words\n") ? text : undefined;
  });
  t.is(log.split("\n").filter((line) => line === "noise").length, 40000);
});

test.serial(
  "a process's stdout reaches its log while the launcher's event loop is busy",
  async (t) => {
    const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-launcher-"));
    t.teardown(() => rm(dir, { recursive: true, force: true }));
    const size = 1 << 20; // more than a pipe holds: relayed, the writer would wait for this process
    const script = `require("fs").writeSync(1, "x".repeat(${size}));`;
    const proc = spawnLogged("busy", process.execPath, ["-e", script], dir);
    t.teardown(() => proc.child.kill("SIGKILL"));
    const exited = once(proc.child, "exit");
    // Block this event loop (no callback runs) until the whole output is in the file, or 10 s.
    const pause = new Int32Array(new SharedArrayBuffer(4));
    const deadline = Date.now() + 10_000;
    let written = 0;
    while (written < size && Date.now() < deadline) {
      Atomics.wait(pause, 0, 0, 50);
      written = statSync(proc.logFile, { throwIfNoEntry: false })?.size ?? 0;
    }
    t.is(written, size);
    t.deepEqual(await exited, [0, null]);
  },
);

test("a program the launcher started stops when the launcher is killed", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-launcher-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // A launcher of its own starts a program as mesh starts Envoy, says the program's pid, and
  // waits.
  const script = `import { spawnLogged } from "./scripts/lib/launcher.ts";
const proc = spawnLogged("sleeper", "sleep", ["300"], ${JSON.stringify(dir)});
proc.child.once("spawn", () => console.log(proc.child.pid));
setInterval(() => {}, 1000);`;
  const launcher = spawn(
    process.execPath,
    ["--import", "tsx", "--input-type=module", "-e", script],
    {
      cwd: repoRoot,
      stdio: ["ignore", "pipe", "inherit"],
    },
  );
  t.teardown(() => launcher.kill("SIGKILL"));
  const [line] = (await once(launcher.stdout, "data")) as [Buffer];
  const pid = Number(line.toString().trim());
  t.teardown(() => alive(pid) && process.kill(pid, "SIGKILL"));
  t.true(pid > 0 && alive(pid), line.toString());

  launcher.kill("SIGKILL");
  await eventually("the program gone", async () => (alive(pid) ? undefined : true));
  t.false(alive(pid));
});

test("replicas start in waves: each service after every service it calls", (t) => {
  const replica = (service: ServiceName, n: number) =>
    ({ service, name: `${service}-${n}` }) as ProcessSpec;
  const plan = (["order", "product", "user"] as const).flatMap((service) => [
    replica(service, 1),
    replica(service, 2),
  ]);
  const waves = startWaves(plan).map((wave) => wave.map((spec) => spec.name));
  // order calls user and product: on one host, its first dials would find their ports unbound.
  t.deepEqual(waves, [
    ["product-1", "product-2", "user-1", "user-2"],
    ["order-1", "order-2"],
  ]);
  for (const service of registry.services) {
    const level = waves.findIndex((wave) => wave.includes(`${service.name}-1`));
    for (const dependency of service.dependencies) {
      t.true(waves.findIndex((wave) => wave.includes(`${dependency}-1`)) < level, service.name);
    }
  }
});
