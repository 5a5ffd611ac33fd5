// Ports for the processes a launch starts: free when handed out, and leased, so that no other
// process on the machine is handed them while the launch lasts (a replica's restart included).
import { spawnSync } from "node:child_process";
import { mkdtemp, rm, utimes, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { repoRoot } from "../scripts/lib/launcher.js";
import { freePorts, leaseFile } from "../scripts/lib/ports.js";

/** `code` (an expression on scripts/lib/ports.ts's exports) in a process of its own. */
function elsewhere(code: string, env: NodeJS.ProcessEnv = process.env): unknown {
  const script = `
    const ports = await import("./scripts/lib/ports.ts");
    console.log(JSON.stringify(await ${code}));`;
  const child = spawnSync(
    process.execPath,
    ["--import", "tsx", "--input-type=module", "-e", script],
    { cwd: repoRoot, encoding: "utf8", env, timeout: 30_000 },
  );
  if (child.status !== 0) throw new Error(child.stderr || `exit ${child.status ?? child.signal}`);
  return JSON.parse(child.stdout);
}

/** leasePort in a process of its own, as another test file or a bench would call it. */
const leaseElsewhere = (ports: readonly number[]) =>
  elsewhere(`Promise.all(${JSON.stringify(ports)}.map((port) => ports.leasePort(port)))`);

const bindable = (port: number) =>
  new Promise<boolean>((resolve) => {
    const server = createServer();
    server.once("error", () => resolve(false));
    server.listen(port, "127.0.0.1", () => server.close(() => resolve(true)));
  });

test("the ports handed out are distinct, free, and no other process can lease them", async (t) => {
  const ports = await freePorts(6);
  t.is(new Set(ports).size, 6);
  for (const port of ports) t.true(await bindable(port), `${port} is taken`);
  t.deepEqual(leaseElsewhere(ports), [false, false, false, false, false, false]);
});

test("a lease past its 30 minutes goes to the next process that asks", async (t) => {
  const [port, kept] = (await freePorts(2)) as [number, number];
  const expired = new Date(Date.now() - 31 * 60_000);
  await utimes(leaseFile(port), expired, expired);
  const aged = new Date(Date.now() - 29 * 60_000);
  await utimes(leaseFile(kept), aged, aged);
  t.deepEqual(leaseElsewhere([port, kept]), [true, false]);
});

test("where no lease can be written, ports are still handed out, unleased", async (t) => {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-ports-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  // A file where the leases' directory would be: no lease can be made under it.
  await writeFile(path.join(dir, "shopmesh-port-leases"), "");
  const ports = elsewhere("ports.freePorts(3)", { ...process.env, TMPDIR: dir }) as number[];
  t.is(new Set(ports).size, 3);
  for (const port of ports) t.true(await bindable(port), `${port} is taken`);
});
