// The compose file, for people with Docker (there is no Docker engine here): it runs the
// registry's topology as the mesh launcher does. test/image.test.ts runs the image's commands.
import { readFile } from "node:fs/promises";
import path from "node:path";
import test from "ava";
import { parse } from "yaml";
import { composeYaml } from "../deploy/compose.js";
import { composeTopology, localTopology } from "../deploy/envoy/topology.js";
import { healthPortOf } from "../deploy/settings.js";
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
    // The image's grpc-health-probe: no Node.js process per check, on the health-only port,
    // which needs no mesh certificate.
    t.deepEqual(service.healthcheck?.test.slice(0, 4), [
      "CMD",
      "grpc-health-probe",
      `-addr=127.0.0.1:${healthPortOf(endpoint?.port as number)}`,
      `-service=${registry.get(kind).protoServices[0]}`,
    ]);
    t.is(path.resolve(deployDir, service.build?.context ?? ""), path.resolve(repoRoot));
    // One database per service, shared by its replicas, migrated once before they start.
    t.deepEqual(service.volumes, [`${kind}-data:/data`]);
    t.true(`${kind}-data` in compose.volumes);
    const migrate = services[`${kind}-migrate`] as ComposeService;
    t.deepEqual(migrate?.volumes, [`${kind}-data:/data`]);
    t.is(migrate?.environment?.SHOP_SERVICE, kind);
    t.deepEqual(migrate?.command, ["node", "dist/scripts/migrate.js"]);
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
  // Under a bash that drains it on SIGTERM (test/edge/envoy-stop.test.ts runs it).
  t.deepEqual(envoy.command?.slice(0, 2), ["bash", "-c"]);
  t.regex(envoy.command?.[2] ?? "", /^envoy '-c' '\/etc\/envoy\/envoy\.yaml' /m);
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

test("compose with TRACING_SETTINGS: every service exports to the collector, and so does Envoy", (t) => {
  const tracing = {
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://collector:4317",
    OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
  };
  const compose = parse(composeYaml(registry, 2, tracing)) as {
    services: Record<string, { environment?: Record<string, string> }>;
  };
  for (const name of registry.names) {
    t.like(compose.services[name]?.environment, tracing, name);
  }
  t.deepEqual(composeTopology(registry, tracing).tracing, {
    collector: { host: "collector", port: 4317 },
    samplePercent: 10,
  });
  t.is(composeTopology(registry).tracing, undefined);
});
