// The import graph of the repo's TypeScript (docs/architecture.md): imports go one way, type
// imports included, between files and between folders.
import { execFileSync } from "node:child_process";
import { readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import ts from "typescript";
import { repoRoot } from "../scripts/lib/launcher.js";

/** Every tracked TypeScript file but the generated ones, with the repo files it imports. */
function importGraph(): Map<string, string[]> {
  const files = execFileSync("git", ["ls-files", "*.ts", "*.mts"], { cwd: repoRoot })
    .toString()
    .split("\n")
    .filter((file) => file !== "" && !file.startsWith("gen/") && !file.endsWith(".d.ts"));
  const known = new Set(files);
  const graph = new Map<string, string[]>();
  for (const file of files) {
    const source = readFileSync(path.join(repoRoot, file), "utf8");
    const imported = ts
      .preProcessFile(source, true, true)
      .importedFiles.map(({ fileName }) => fileName)
      .filter((specifier) => specifier.startsWith("."))
      .map((specifier) =>
        path.posix
          .join(path.posix.dirname(file), specifier)
          .replace(/\.js$/, ".ts")
          .replace(/\.mjs$/, ".mts"),
      )
      .filter((target) => known.has(target));
    graph.set(file, imported);
  }
  return graph;
}

/** Each import cycle found, as the files around it: "a.ts → b.ts → a.ts". */
function cycles(graph: Map<string, string[]>): string[] {
  const found: string[] = [];
  const done = new Set<string>();
  const path: string[] = [];
  const onPath = new Set<string>();
  const visit = (file: string) => {
    path.push(file);
    onPath.add(file);
    for (const target of graph.get(file) ?? []) {
      if (onPath.has(target)) {
        found.push([...path.slice(path.indexOf(target)), target].join(" → "));
      } else if (!done.has(target)) {
        visit(target);
      }
    }
    path.pop();
    onPath.delete(file);
    done.add(file);
  };
  for (const file of graph.keys()) if (!done.has(file)) visit(file);
  return found;
}

const graph = importGraph();

test("the graph is read: the kit's runtime imports its server and its services' module type", (t) => {
  t.true(graph.get("kit/runtime/start.ts")?.includes("kit/server.ts"));
  t.true(graph.get("kit/runtime/start.ts")?.includes("kit/service.ts"));
  // A type import counts: service.ts imports the client's index for its Client type only.
  t.true(graph.get("kit/service.ts")?.includes("kit/client/index.ts"));
});

test("no file imports another that imports it back, directly or through others", (t) => {
  t.deepEqual(cycles(graph), []);
});

test("cycles() finds a cycle and names its files in order", (t) => {
  const looped = new Map([
    ["a.ts", ["b.ts"]],
    ["b.ts", ["c.ts"]],
    ["c.ts", ["a.ts", "d.ts"]],
    ["d.ts", []],
  ]);
  t.deepEqual(cycles(looped), ["a.ts → b.ts → c.ts → a.ts"]);
});

/** The folders, each above the ones before it: a file imports only from its own or lower ones. */
const LAYERS = ["gen", "kit", "services", "deploy", "scripts", "bench"];

/** Files that only tests run: they may reach any folder. */
const isTestCode = (file: string) =>
  file.startsWith("test/") || /(\.test|\.suite|\.fixture|test-setup)\.ts$/.test(file);

const layerOf = (file: string) => LAYERS.indexOf(file.slice(0, file.indexOf("/")));

test("no folder imports from one above it: the kit from no service, deploy/ from no script", (t) => {
  const upward = [...graph]
    .filter(([file]) => !isTestCode(file) && layerOf(file) >= 0)
    .flatMap(([file, targets]) =>
      targets
        .filter((target) => !isTestCode(target) && layerOf(target) > layerOf(file))
        .map((target) => `${file} → ${target}`),
    );
  t.deepEqual(upward, []);
});
