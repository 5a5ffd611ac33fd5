// The deployment files for people with Docker (there is no Docker engine here): the compose file
// runs the registry's topology as the mesh launcher does, and the image holds every file and
// package a container runs.
import { readdirSync } from "node:fs";
import { readFile } from "node:fs/promises";
import path from "node:path";
import test from "ava";
import { parse } from "yaml";
import { composeTopology, localTopology } from "../deploy/envoy/config.js";
import { serviceVariable } from "../kit/registry.js";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { registry } from "../services/registry.js";
import { exec } from "./helpers/exec.js";

interface ComposeService {
  image?: string;
  build?: { context: string; dockerfile: string };
  command?: string[];
  environment?: Record<string, string>;
  volumes?: string[];
  ports?: string[];
  deploy?: { replicas?: number };
  depends_on?: Record<string, { condition: string }>;
  healthcheck?: { test: string[] };
}

test("deploy/compose.yaml runs the mesh's topology: the services, ports and wiring Envoy expects", async (t) => {
  const composeFile = path.join(repoRoot, "deploy/compose.yaml");
  const docker = await exec("docker", ["compose", "version"]).catch((error: Error) => ({
    code: -1,
    stdout: "",
    stderr: error.message,
  }));
  if (docker.code === 0) {
    const config = await exec("docker", ["compose", "-f", composeFile, "config", "-q"]);
    t.is(config.code, 0, config.stderr);
  } else {
    t.log(
      `docker compose is not available (${docker.stderr.trim().split("\n")[0]}); ` +
        "checking the file's structure against the topology instead",
    );
  }

  const compose = parse(await readFile(composeFile, "utf8"), { merge: true }) as {
    services: Record<string, ComposeService>;
    volumes: Record<string, unknown>;
  };
  const services = compose.services;
  const topology = composeTopology();
  const replicas = localTopology().services.user?.length;
  const deployDir = path.dirname(composeFile);
  const dns = (kind: string) =>
    `${topology.services[kind]?.[0]?.host}:${topology.services[kind]?.[0]?.port}`;

  for (const { name: kind, dependencies } of registry.services) {
    const [endpoint] = topology.services[kind] ?? [];
    // Envoy's STRICT_DNS cluster resolves the compose service's name: every replica is a host.
    t.is(endpoint?.host, kind, `envoy.compose.yaml must resolve the compose service "${kind}"`);
    const service = services[kind] as ComposeService;
    t.truthy(service, `compose service ${kind}`);
    t.is(service.deploy?.replicas, replicas, `${kind}: as many replicas as npm run mesh`);
    t.like(service.environment, {
      SHOP_SERVICE: kind,
      SHOP_HOST: "0.0.0.0",
      SHOP_PORT: String(endpoint?.port),
    });
    t.deepEqual(service.healthcheck?.test.slice(-1), ["scripts/probe.ts"]);
    t.is(path.resolve(deployDir, service.build?.context ?? ""), path.resolve(repoRoot));
    // One database per service, shared by its replicas, migrated once before they start.
    t.deepEqual(service.volumes, [`${kind}-data:/data`]);
    t.true(`${kind}-data` in compose.volumes);
    const migrate = services[`${kind}-migrate`] as ComposeService;
    t.deepEqual(migrate?.volumes, [`${kind}-data:/data`]);
    t.is(migrate?.environment?.SHOP_SERVICE, kind);
    t.deepEqual(migrate?.command?.slice(-1), ["scripts/migrate.ts"]);
    t.is(service.depends_on?.[`${kind}-migrate`]?.condition, "service_completed_successfully");
    // Callers dial what they call by the same DNS names, balanced round_robin, once it is healthy.
    for (const dependency of dependencies) {
      t.is(service.environment?.[serviceVariable(dependency, "ADDR")], dns(dependency));
      t.is(service.depends_on?.[dependency]?.condition, "service_healthy");
    }
  }
  t.like(services.order?.environment, {
    SHOP_USER_ADDR: dns("user"),
    SHOP_PRODUCT_ADDR: dns("product"),
  });
  t.like(services.seed?.environment, {
    SHOP_USER_ADDR: dns("user"),
    SHOP_PRODUCT_ADDR: dns("product"),
  });

  // Envoy: the pinned image of the local binary, the generated compose config, the descriptor
  // where that config loads it, the listener published on loopback.
  const envoy = services.envoy as ComposeService;
  const version = (await exec(tool("envoy"), ["--version"])).stdout.match(
    /\/(\d+\.\d+\.\d+)\//,
  )?.[1];
  t.is(envoy.image, `envoyproxy/envoy:v${version}`);
  t.deepEqual(envoy.command?.slice(0, 3), ["envoy", "-c", "/etc/envoy/envoy.yaml"]);
  const mounts = Object.fromEntries(
    (envoy.volumes ?? []).map((volume) => {
      const [host, container] = volume.split(":");
      return [container, path.resolve(deployDir, host as string)];
    }),
  );
  t.is(mounts["/etc/envoy/envoy.yaml"], path.join(repoRoot, "deploy/envoy/envoy.compose.yaml"));
  t.is(mounts[path.dirname(topology.descriptorPath)], path.join(repoRoot, "gen/descriptor"));
  t.deepEqual(envoy.ports, [`127.0.0.1:8080:${topology.listen.port}`]);
  for (const kind of registry.names) t.is(envoy.depends_on?.[kind]?.condition, "service_healthy");
});

test("the Dockerfile installs production dependencies and copies every file a service imports", async (t) => {
  const dockerfile = await readFile(path.join(repoRoot, "Dockerfile"), "utf8");
  t.regex(dockerfile, /^FROM node:20-bookworm-slim AS deps$/m);
  t.regex(dockerfile, /^RUN npm ci --omit=dev\b/m);
  t.regex(dockerfile, /^CMD .*node --import tsx services\/main\.ts \\"\$\{SHOP_SERVICE:\?/m);
  const copied = [...dockerfile.matchAll(/^COPY (?!--from)(.+) (\S+)$/gm)].flatMap((match) =>
    (match[1] as string).split(/\s+/),
  );

  const pkg = JSON.parse(await readFile(path.join(repoRoot, "package.json"), "utf8")) as {
    dependencies: Record<string, string>;
  };
  t.true("tsx" in pkg.dependencies, "the image runs TypeScript with tsx, so it is a dependency");

  // Every file reachable by import from what the containers run.
  const entries = ["services/main.ts", "scripts/migrate.ts", "scripts/probe.ts", "scripts/seed.ts"];
  const seen = new Set<string>();
  const packages = new Set<string>();
  const queue = [...entries];
  while (queue.length > 0) {
    const file = queue.pop() as string;
    if (seen.has(file)) continue;
    seen.add(file);
    const source = await readFile(path.join(repoRoot, file), "utf8");
    // Static imports and import("…") alike: the registry loads each service module lazily.
    for (const [, specifier] of source.matchAll(/(?:from|import)(?:\s+|\s*\(\s*)"([^"]+)"/g)) {
      if (!specifier || specifier.startsWith("node:")) continue;
      if (specifier.startsWith(".")) {
        queue.push(path.join(path.dirname(file), specifier).replace(/\.js$/, ".ts"));
      } else {
        const parts = specifier.split("/");
        packages.add(
          specifier.startsWith("@") ? parts.slice(0, 2).join("/") : (parts[0] as string),
        );
      }
    }
  }
  const outside = [...seen].filter(
    (file) => !copied.some((source) => file === source || file.startsWith(`${source}/`)),
  );
  t.deepEqual(outside, [], "files the containers import but the Dockerfile does not copy");
  t.deepEqual(
    [...packages].filter((name) => !(name in pkg.dependencies)).sort(),
    [],
    "packages the containers import that npm ci --omit=dev leaves out",
  );
  // Reflection reads the descriptor set at run time (kit/descriptor.ts).
  t.true(copied.includes("gen/descriptor"));
  t.true(readdirSync(path.join(repoRoot, "gen/descriptor")).includes("shop.binpb"));
});
