// deploy/k8s: generated from the registry (a drift test like Envoy's), built by the real
// kustomize, decoded strictly by the real Kubernetes API types (tools/k8s-validate), accepted by
// the real Envoy, and shaped as the mesh needs: native gRPC probes, a termination grace that
// covers the server's, headless Services, disruption budgets, production's autoscalers, an
// account per workload, and network policies that let in only the callers the registry names.
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test from "ava";
import { parseAllDocuments, stringify } from "yaml";
import { SYSTEM_CAS } from "../deploy/envoy/observability.js";
import { staleFiles } from "../deploy/generate.js";
import { PRODUCTION_CPU_REQUEST, SCALE_AT_UTILIZATION } from "../deploy/kubernetes/availability.js";
import { PRE_STOP_SLEEP_S } from "../deploy/kubernetes/deployments.js";
import {
  ENVOY_CPU_CORES,
  ENVOY_STATS_PORT,
  kubernetesTopology,
} from "../deploy/kubernetes/envoy.js";
import { K8S_DIR, kubernetesFiles } from "../deploy/kubernetes/files.js";
import { callersOf, MONITORING_NAMESPACE_LABELS } from "../deploy/kubernetes/network.js";
import {
  OVERLAYS,
  POSTGRES_CONNECTIONS,
  productionImageTag,
} from "../deploy/kubernetes/overlays.js";
import { kubernetesPrometheusConfig, localTargets } from "../deploy/prometheus/config.js";
import {
  DATABASE_SECRET,
  healthPortOf,
  JWT_SETTINGS,
  MAX_CONNECTION_AGE_MS,
  OLD_SPACE_MB,
  SERVICE_MEMORY_LIMIT_MIB,
} from "../deploy/settings.js";
import { serviceVariable } from "../kit/registry.js";
import { validateEnvoy, withLocalPaths } from "../scripts/lib/envoy-validate.js";
import { repoRoot, tool } from "../scripts/lib/launcher.js";
import { registry } from "../services/registry.js";
import { CERTS } from "./helpers/credentials.js";
import { exec } from "./helpers/exec.js";

// biome-ignore lint/suspicious/noExplicitAny: walking parsed manifests
type Manifest = any;

const KUSTOMIZE = tool("kustomize");
const VALIDATE = tool("k8s-validate");
const OVERLAY_DIRS = {
  base: `${K8S_DIR}/base`,
  development: `${K8S_DIR}/overlays/development`,
  production: `${K8S_DIR}/overlays/production`,
};

async function tempDir(t: import("ava").ExecutionContext) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-k8s-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

async function build(dir: string): Promise<string> {
  const result = await exec(KUSTOMIZE, ["build", dir]);
  if (result.code !== 0) throw new Error(`kustomize build ${dir}: ${result.stderr}`);
  return result.stdout;
}

const parse = (text: string): Manifest[] =>
  parseAllDocuments(text)
    .map((doc) => doc.toJS())
    .filter(Boolean);

const find = (objects: Manifest[], kind: string, name: string) =>
  objects.find((object) => object.kind === kind && object.metadata.name === name);

/**
 * How many pods a Deployment runs: development's fixed count; in production, an autoscaler's
 * range from two up, on CPU, and no count in the Deployment that an apply would reset it to.
 */
function checkPods(
  t: import("ava").ExecutionContext,
  objects: Manifest[],
  overlay: keyof typeof OVERLAYS,
  name: string,
) {
  const deployment = find(objects, "Deployment", name);
  const autoscaler = find(objects, "HorizontalPodAutoscaler", name);
  if (overlay === "development") {
    t.is(deployment.spec.replicas, OVERLAYS.development.replicas);
    t.is(autoscaler, undefined);
    return;
  }
  t.is(deployment.spec.replicas, undefined, `${name}: the autoscaler owns the count`);
  t.deepEqual(autoscaler.spec.scaleTargetRef, { apiVersion: "apps/v1", kind: "Deployment", name });
  t.is(autoscaler.spec.minReplicas, OVERLAYS.production.replicas);
  t.true(autoscaler.spec.minReplicas >= 2);
  t.true(autoscaler.spec.maxReplicas > autoscaler.spec.minReplicas);
  t.deepEqual(autoscaler.spec.metrics, [
    {
      type: "Resource",
      resource: {
        name: "cpu",
        target: { type: "Utilization", averageUtilization: SCALE_AT_UTILIZATION },
      },
    },
  ]);
  // Utilization is of the request: the pod requests what the autoscaler plans with.
  const [container] = deployment.spec.template.spec.containers;
  t.is(container.resources.requests.cpu, PRODUCTION_CPU_REQUEST);
  // A drain takes a pod at a time and still leaves one serving at the autoscaler's floor.
  const budget = find(objects, "PodDisruptionBudget", name);
  t.true(budget.spec.maxUnavailable < autoscaler.spec.minReplicas);
}

/** Runs the validator on one file of manifests. */
async function validate(t: import("ava").ExecutionContext, text: string) {
  const file = path.join(await tempDir(t), "manifests.yaml");
  await writeFile(file, text);
  const result = await exec(VALIDATE, [file]);
  return { ok: result.code === 0, output: `${result.stdout}${result.stderr}` };
}

test.before(() => {
  for (const binary of [KUSTOMIZE, VALIDATE]) {
    if (!existsSync(binary)) throw new Error(`${binary} is missing: run npm run tools`);
  }
});

test("deploy/k8s is what generate.ts writes now, with no file it no longer writes", async (t) => {
  // The committed files, whatever SHOP_IMAGE_TAG this shell exports.
  const expected = kubernetesFiles(undefined, undefined, undefined, OVERLAYS.production.tag);
  for (const [file, text] of Object.entries(expected)) {
    const committed = await readFile(path.join(repoRoot, file), "utf8").catch(() => "");
    t.true(committed === text, `${file} drifted: run npm run deploy:config`);
  }
  t.deepEqual(await staleFiles(repoRoot, Object.keys(expected)), []);
});

for (const [overlay, dir] of Object.entries(OVERLAY_DIRS)) {
  test(`kustomize builds ${overlay} and every object decodes strictly as its Kubernetes type`, async (t) => {
    const text = await build(dir);
    const { ok, output } = await validate(t, text);
    t.true(ok, output);
    const objects = parse(text);
    t.regex(output, new RegExp(`${objects.length} object\\(s\\) valid`));
    t.true(objects.length >= registry.services.length * 4);
  });
}

test("a service runs one pod on the base alone, and more only in production, on PostgreSQL from a Secret", async (t) => {
  const base = parse(await build(OVERLAY_DIRS.base));
  const production = parse(await build(OVERLAY_DIRS.production));
  for (const { name } of registry.services) {
    // Each pod of a base Deployment would have a SQLite file of its own.
    t.is(find(base, "Deployment", name).spec.replicas, 1, name);
    const [container] = find(production, "Deployment", name).spec.template.spec.containers;
    const url = container.env.find((v: Manifest) => v.name === "SHOP_DATABASE_URL");
    t.is(url?.valueFrom?.secretKeyRef?.optional, undefined, `${name}: a missing key stops the pod`);
    t.truthy(url?.valueFrom?.secretKeyRef?.name, name);
  }
});

test("production's front door is a LoadBalancer that keeps the client's address", async (t) => {
  const production = parse(await build(OVERLAY_DIRS.production));
  const { spec } = find(production, "Service", "envoy");
  t.is(spec.type, "LoadBalancer");
  // Cluster (the default) passes traffic through other nodes, which put their own address on it.
  t.is(spec.externalTrafficPolicy, "Local");
});

test("PRODUCTION_IMAGE and SHOP_IMAGE_TAG point every production pod at the build, Envoy's descriptor copy too", async (t) => {
  const dir = await tempDir(t);
  const image = "registry.example.com/shopmesh";
  const tag = productionImageTag({ SHOP_IMAGE_TAG: "0.2.0-3f9c2ab" });
  for (const [file, text] of Object.entries(kubernetesFiles(undefined, image, undefined, tag))) {
    await mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await writeFile(path.join(dir, file), text);
  }
  const objects = parse(await build(path.join(dir, OVERLAY_DIRS.production)));
  const images = objects
    .filter((object) => object.kind === "Deployment")
    .flatMap((object) => [
      ...object.spec.template.spec.containers,
      ...(object.spec.template.spec.initContainers ?? []),
    ])
    .map((container: { image: string }) => container.image)
    .filter((name: string) => name.split(":")[0]?.endsWith("shopmesh"));
  t.true(images.length > registry.services.length, images.join(", "));
  t.deepEqual([...new Set(images)], [`${image}:0.2.0-3f9c2ab`]);
  // Unset, the version; a tag Docker would not take stops the generation.
  t.is(productionImageTag({}), OVERLAYS.production.tag);
  for (const bad of ["-x", "a b", "v1:2", "x".repeat(129)]) {
    t.throws(() => productionImageTag({ SHOP_IMAGE_TAG: bad }), { message: /SHOP_IMAGE_TAG/ }, bad);
  }
});

test("a manifest with an unknown field or a value of the wrong type fails validation", async (t) => {
  const objects = parse(await build(OVERLAY_DIRS.production));
  const deployment = find(objects, "Deployment", "order");
  const container = deployment.spec.template.spec.containers[0];

  const misspelt = structuredClone(deployment);
  misspelt.spec.template.spec.containers[0].readinessProbe.grpc.serviceName = "x";
  const unknown = await validate(t, stringify(misspelt));
  t.false(unknown.ok);
  t.regex(
    unknown.output,
    /unknown field "spec\.template\.spec\.containers\[0\]\.readinessProbe\.grpc\.serviceName"/,
  );

  const wrongType = structuredClone(deployment);
  wrongType.spec.template.spec.containers[0].ports[0].containerPort = String(
    container.ports[0].containerPort,
  );
  const typed = await validate(t, stringify(wrongType));
  t.false(typed.ok);
  t.regex(
    typed.output,
    /cannot unmarshal string into Go struct field ContainerPort\.spec\.template\.spec\.containers\.ports\.containerPort of type int32/,
  );

  // A kind the API does not have, and a key given twice, fail as well.
  const unknownKind = await validate(t, stringify({ ...deployment, kind: "Deploymnet" }));
  t.false(unknownKind.ok);
  const twice = await validate(t, `${stringify(deployment)}metadata:\n  name: again\n`);
  t.false(twice.ok);
  t.regex(twice.output, /already set|duplicate|mapping key/i);

  // The same Deployment, untouched, passes: the failures above are the edits'.
  t.true((await validate(t, stringify(deployment))).ok);
});

test("kustomize refuses a kustomization with an unknown field", async (t) => {
  const dir = await tempDir(t);
  await writeFile(
    path.join(dir, "kustomization.yaml"),
    `resources:\n  - ${path.join(repoRoot, OVERLAY_DIRS.base)}\nreplica:\n  - name: user\n    count: 3\n`,
  );
  const result = await exec(KUSTOMIZE, ["build", "--load-restrictor", "LoadRestrictionsNone", dir]);
  t.not(result.code, 0);
  t.regex(result.stderr, /replica/);
});

for (const overlay of ["development", "production"] as const) {
  test(`${overlay}: every service as the mesh needs it`, async (t) => {
    const objects = parse(await build(OVERLAY_DIRS[overlay]));
    const config = objects.find(
      (object) => object.kind === "ConfigMap" && object.metadata.name.startsWith("shopmesh-"),
    );
    const settings = config.data as Record<string, string>;
    t.is(settings.SHOP_PROFILE, overlay);
    t.is(Number(settings.SHOP_MAX_CONNECTION_AGE_MS), MAX_CONNECTION_AGE_MS);
    const shutdownGraceS = Number(settings.SHOP_SHUTDOWN_GRACE_MS) / 1000;
    t.true(shutdownGraceS > 0);
    // Secrets are referenced, never shipped.
    t.deepEqual(
      objects.filter((object) => object.kind === "Secret"),
      [],
    );

    for (const service of registry.services) {
      const { name, port } = service;
      const deployment = find(objects, "Deployment", name);
      t.truthy(deployment, `${name}: Deployment`);
      t.is(deployment.metadata.namespace, OVERLAYS[overlay].namespace);
      checkPods(t, objects, overlay, name);
      const pod = deployment.spec.template.spec;
      const [container] = pod.containers;
      const labels = deployment.spec.template.metadata.labels;
      // An identity of its own, with no token mounted.
      t.is(pod.serviceAccountName, name);
      t.is(find(objects, "ServiceAccount", name)?.automountServiceAccountToken, false);
      t.false(pod.automountServiceAccountToken);

      // Native gRPC probes on the health-only port (the service port wants a mesh certificate,
      // which the kubelet cannot present): readiness on its proto service.
      const health = healthPortOf(port);
      t.deepEqual(container.readinessProbe.grpc, {
        port: health,
        service: service.protoServices[0],
      });
      t.deepEqual(container.livenessProbe.grpc, { port: health });
      t.deepEqual(container.startupProbe.grpc, { port: health });
      t.deepEqual(container.ports, [
        { name: "grpc", containerPort: port, protocol: "TCP" },
        { name: "health", containerPort: health, protocol: "TCP" },
        { name: "metrics", containerPort: service.metricsPort, protocol: "TCP" },
      ]);
      t.like(deployment.spec.template.metadata.annotations, {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": String(service.metricsPort),
      });

      // Kubernetes waits for the preStop sleep and the whole shutdown grace before SIGKILL.
      t.is(container.lifecycle.preStop.sleep.seconds, PRE_STOP_SLEEP_S);
      t.true(pod.terminationGracePeriodSeconds > PRE_STOP_SLEEP_S + shutdownGraceS);
      // A rollout goes on only once the pod a new one replaced has had all its time to stop:
      // one pod at a time holds its pool while it stops (the pool budget below counts one).
      t.true(deployment.spec.minReadySeconds >= pod.terminationGracePeriodSeconds);

      t.truthy(container.resources.requests.cpu);
      t.truthy(container.resources.requests.memory);
      t.is(container.resources.limits.memory, `${SERVICE_MEMORY_LIMIT_MIB}Mi`);
      // V8 stops at its old-generation cap well inside the limit: the node executable's pages,
      // the young generation, code and native memory took about 100 MB more in the benchmark.
      t.true(OLD_SPACE_MB + 100 <= (SERVICE_MEMORY_LIMIT_MIB * 2 ** 20) / 1e6);
      t.like(pod.securityContext, {
        runAsNonRoot: true,
        seccompProfile: { type: "RuntimeDefault" },
      });
      t.true(pod.securityContext.runAsUser > 0);
      t.deepEqual(container.securityContext, {
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        runAsNonRoot: true,
        capabilities: { drop: ["ALL"] },
      });
      t.false(pod.automountServiceAccountToken);

      // Its environment: the service, its port, and each dependency by its headless Service.
      const env = Object.fromEntries(
        (container.env as { name: string; value?: string }[]).map((v) => [v.name, v]),
      );
      t.is(env.SHOP_SERVICE?.value, name);
      t.is(env.SHOP_PORT?.value, String(port));
      t.is(env.SHOP_HEALTH_PORT?.value, String(health));
      // Its mTLS identity and the JWKS from Secrets, in every overlay: plaintext is for loopback.
      const secretOf = (variable: string) => {
        const file = env[variable]?.value as string;
        const mount = (container.volumeMounts as { name: string; mountPath: string }[]).find((m) =>
          file?.startsWith(`${m.mountPath}/`),
        );
        const volume = pod.volumes.find((v: Manifest) => v.name === mount?.name);
        return volume?.secret?.secretName;
      };
      for (const variable of ["SHOP_TLS_CERT_FILE", "SHOP_TLS_KEY_FILE", "SHOP_TLS_CA_FILE"]) {
        t.is(secretOf(variable), `shopmesh-tls-${name}`, `${name}: ${variable}`);
      }
      t.is(secretOf("SHOP_JWKS_FILE"), "shopmesh-jwks");
      t.is(
        secretOf("SHOP_PAGE_TOKEN_SECRET_FILE"),
        overlay === "production" ? "shopmesh-page-token" : undefined,
      );
      t.is(settings.SHOP_JWT_ISSUER, JWT_SETTINGS.SHOP_JWT_ISSUER);
      t.is(settings.SHOP_JWT_AUDIENCE, JWT_SETTINGS.SHOP_JWT_AUDIENCE);
      t.true(
        container.envFrom.some((from: Manifest) => from.configMapRef.name === config.metadata.name),
      );
      for (const dependency of service.dependencies) {
        const headless = find(objects, "Service", dependency);
        t.is(
          env[serviceVariable(dependency, "ADDR")]?.value,
          `${dependency}:${headless.spec.ports[0].port}`,
        );
      }

      // Headless: DNS returns every ready pod, for round_robin and Envoy's STRICT_DNS.
      const svc = find(objects, "Service", name);
      t.is(svc.spec.clusterIP, "None");
      t.like(labels, svc.spec.selector);
      // No appProtocol: kubernetes.io/h2c would say cleartext HTTP/2, and the port serves mutual
      // TLS; Kubernetes has no standard name for HTTP/2 over TLS.
      t.deepEqual(svc.spec.ports, [{ name: "grpc", port, targetPort: "grpc", protocol: "TCP" }]);

      const budget = find(objects, "PodDisruptionBudget", name);
      t.like(labels, budget.spec.selector.matchLabels);
      t.is(budget.spec.maxUnavailable, 1);

      // Only Envoy (for a public service) and the services that call it may connect; only the
      // monitoring namespaces may scrape.
      const policy = find(objects, "NetworkPolicy", name);
      t.like(labels, policy.spec.podSelector.matchLabels);
      const [callers, scrapers] = policy.spec.ingress;
      const allowed = callers.from.map(
        (from: Manifest) => from.podSelector.matchLabels["app.kubernetes.io/name"],
      );
      t.deepEqual(allowed.sort(), callersOf(service, registry).sort());
      t.deepEqual(callers.ports, [{ protocol: "TCP", port }]);
      t.deepEqual(scrapers, {
        from: [{ namespaceSelector: { matchLabels: MONITORING_NAMESPACE_LABELS } }],
        ports: [{ protocol: "TCP", port: service.metricsPort }],
      });
      t.is(policy.spec.ingress.length, 2);

      const volumes = Object.fromEntries(
        pod.volumes.map((volume: Manifest) => [volume.name, volume]),
      );
      if (overlay === "development") {
        // SQLite on its own volume, one pod at a time.
        t.is(volumes.data.persistentVolumeClaim.claimName, `${name}-data`);
        t.truthy(find(objects, "PersistentVolumeClaim", `${name}-data`));
        t.deepEqual(deployment.spec.strategy, { type: "Recreate" });
        t.is(env[DATABASE_SECRET.variable], undefined);
      } else {
        // PostgreSQL from a Secret; certificates and keys mounted as files, from Secrets.
        t.deepEqual(env[DATABASE_SECRET.variable], {
          name: DATABASE_SECRET.variable,
          valueFrom: { secretKeyRef: { name: DATABASE_SECRET.secret, key: name } },
        });
        t.is(volumes.tls.secret.secretName, `shopmesh-tls-${name}`);
        t.is(env.SHOP_TLS_CERT_FILE?.value, "/etc/shopmesh/tls/tls.crt");
        t.truthy(env.SHOP_PAGE_TOKEN_SECRET_FILE?.value);
        t.truthy(env.SHOP_JWKS_FILE?.value);
        t.like(deployment.spec.strategy.rollingUpdate, { maxUnavailable: 0 });
      }
    }

    // Ingress is closed unless a policy opens it; Envoy's listener is open to every client.
    const deny = find(objects, "NetworkPolicy", "default-deny-ingress");
    t.deepEqual(deny.spec, { podSelector: {}, policyTypes: ["Ingress"] });
    const envoyPolicy = find(objects, "NetworkPolicy", "envoy");
    t.deepEqual(envoyPolicy.spec.ingress, [
      { ports: [{ protocol: "TCP", port: 8080 }] },
      {
        from: [{ namespaceSelector: { matchLabels: MONITORING_NAMESPACE_LABELS } }],
        ports: [{ protocol: "TCP", port: ENVOY_STATS_PORT }],
      },
    ]);

    // Envoy: its config from the ConfigMap, each public service by its headless Service's name.
    const envoy = find(objects, "Deployment", "envoy");
    checkPods(t, objects, overlay, "envoy");
    t.is(envoy.spec.template.spec.serviceAccountName, "envoy");
    t.is(find(objects, "ServiceAccount", "envoy")?.automountServiceAccountToken, false);
    t.is(
      objects.filter((object) => object.kind === "HorizontalPodAutoscaler").length,
      overlay === "production" ? registry.names.length + 1 : 0,
    );
    if (overlay === "production") {
      // At the autoscalers' ceiling, with a rollout's extra pod and one still stopping, every
      // pool fits one server, with a connection for each new pod's migration.
      const services = registry.names.length;
      const pods = (OVERLAYS.production.maxReplicas + 2) * services;
      const pool = Number(settings.SHOP_DATABASE_POOL_MAX);
      t.true(
        pool >= 1 && pods * pool + services <= POSTGRES_CONNECTIONS,
        `${pods} pods × ${pool} + ${services}`,
      );
    }
    // One worker thread per core it may use: Envoy's default is one per core of the node.
    const [proxy] = envoy.spec.template.spec.containers;
    const workers = proxy.args[proxy.args.indexOf("--concurrency") + 1];
    t.is(workers, String(ENVOY_CPU_CORES));
    t.is(proxy.resources.limits.cpu, workers);
    // Readiness is the admin's, through the stats listener: no process starts per probe.
    t.deepEqual(proxy.readinessProbe.httpGet, { path: "/ready", port: ENVOY_STATS_PORT });
    const envoyConfigMap = objects.find(
      (object) => object.kind === "ConfigMap" && object.metadata.name.startsWith("envoy-"),
    );
    t.is(
      envoy.spec.template.spec.volumes.find((v: Manifest) => v.name === "config").configMap.name,
      envoyConfigMap.metadata.name,
    );
    const bootstrap = parse(envoyConfigMap.data["envoy.yaml"])[0];
    const clusters = Object.fromEntries(
      bootstrap.static_resources.clusters.map((cluster: Manifest) => [cluster.name, cluster]),
    );
    for (const service of registry.services.filter((s) => s.publicServices.length > 0)) {
      const cluster = clusters[service.name];
      t.is(cluster.type, "STRICT_DNS");
      t.deepEqual(cluster.load_assignment.endpoints[0].lb_endpoints[0].endpoint.address, {
        socket_address: { address: service.name, port_value: service.port },
      });
    }
    t.is(envoy.spec.template.spec.initContainers[0].image, container0Image(objects));
  });
}

/** The shopmesh image the services run (the overlay's tag), which Envoy's init container copies from. */
function container0Image(objects: Manifest[]): string {
  return find(objects, "Deployment", registry.names[0] as string).spec.template.spec.containers[0]
    .image;
}

test("Envoy accepts the Kubernetes config", async (t) => {
  const text = kubernetesFiles()[`${K8S_DIR}/base/envoy/envoy.yaml`] as string;
  const mounted = "proto_descriptor: /descriptor/shop.binpb";
  t.is(text.split(mounted).length, 2, "the config loads the descriptor the init container copies");
  // TLS to the services and at the edge, with the edge's identity and the JWKS from Secrets.
  for (const file of ["tls/tls.crt", "tls/tls.key", "tls/ca.crt", "jwks/jwks.json"]) {
    t.true(text.includes(`/etc/shopmesh/${file}`), `the config reads /etc/shopmesh/${file}`);
  }
  // Validation opens them: the development set stands in for the mounted Secrets.
  const file = path.join(await tempDir(t), "envoy.yaml");
  await writeFile(file, withLocalPaths(text, kubernetesTopology(), CERTS));
  const { ok, output } = await validateEnvoy(file);
  t.true(ok, output);
});

test("with TRACING_SETTINGS, every pod exports its spans and Envoy's tracer roots each trace", async (t) => {
  const tracing = {
    OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector.observability:4317",
    OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
    OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
    OTEL_TRACES_SAMPLER_ARG: "0.1",
  };
  const files = kubernetesFiles(undefined, undefined, tracing);
  const kustomization = files[`${K8S_DIR}/base/kustomization.yaml`] as string;
  for (const [name, value] of Object.entries(tracing)) {
    t.true(kustomization.includes(`${name}=${value}`), `the services' ConfigMap sets ${name}`);
  }
  const text = files[`${K8S_DIR}/base/envoy/envoy.yaml`] as string;
  const config = parseAllDocuments(text)[0]?.toJS();
  const collector = config.static_resources.clusters.find(
    (cluster: { name: string }) => cluster.name === "opentelemetry_collector",
  );
  t.like(collector, {
    type: "STRICT_DNS",
    load_assignment: {
      endpoints: [
        {
          lb_endpoints: [
            {
              endpoint: {
                address: {
                  socket_address: { address: "otel-collector.observability", port_value: 4317 },
                },
              },
            },
          ],
        },
      ],
    },
  });
  t.regex(text, /envoy\.tracers\.opentelemetry/);
  t.regex(text, /numerator: 100000\n\s*denominator: MILLION/, "Envoy samples 10% of new traces");
  const file = path.join(await tempDir(t), "envoy.yaml");
  await writeFile(file, withLocalPaths(text, kubernetesTopology(undefined, tracing), CERTS));
  const { ok, output } = await validateEnvoy(file);
  t.true(ok, output);
  // Unset, as shipped: nothing exported, no tracer.
  t.false((kubernetesFiles()[`${K8S_DIR}/base/envoy/envoy.yaml`] as string).includes("tracers"));
});

test("a collector over https with an API key: Envoy's spans go there over TLS, with the key", async (t) => {
  const tracing = {
    OTEL_EXPORTER_OTLP_ENDPOINT: "https://otlp.vendor.example",
    OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
    OTEL_EXPORTER_OTLP_HEADERS: "x-api-key=s3cr%3Dt,x-team=shop",
  };
  const topology = kubernetesTopology(undefined, tracing);
  t.deepEqual(topology.tracing, {
    collector: { host: "otlp.vendor.example", port: 443 },
    samplePercent: 10,
    tls: true,
    headers: { "x-api-key": "s3cr=t", "x-team": "shop" },
  });
  const text = kubernetesFiles(undefined, undefined, tracing)[
    `${K8S_DIR}/base/envoy/envoy.yaml`
  ] as string;
  const config = parseAllDocuments(text)[0]?.toJS();
  const collector = config.static_resources.clusters.find(
    (cluster: { name: string }) => cluster.name === "opentelemetry_collector",
  );
  t.like(collector.transport_socket.typed_config, {
    sni: "otlp.vendor.example",
    common_tls_context: { validation_context: { trusted_ca: { filename: SYSTEM_CAS } } },
  });
  t.regex(text, /initial_metadata:\n\s*- key: x-api-key\n\s*value: s3cr=t/);
  const file = path.join(await tempDir(t), "envoy.yaml");
  await writeFile(file, withLocalPaths(text, topology, CERTS));
  const { ok, output } = await validateEnvoy(file);
  t.true(ok, output);
});

interface Relabel {
  source_labels?: string[];
  regex?: string;
  replacement?: string;
  target_label?: string;
  action?: string;
}

/** Prometheus's keep and replace relabelling, as it applies them to a discovered target. */
function relabel(labels: Record<string, string>, rules: Relabel[]) {
  const out: Record<string, string> = { ...labels };
  for (const rule of rules) {
    const value = (rule.source_labels ?? []).map((name) => out[name] ?? "").join(";");
    const match = new RegExp(`^(?:${rule.regex ?? "(.*)"})$`).exec(value);
    if (rule.action === "keep") {
      if (!match) return undefined;
      continue;
    }
    if (!match || !rule.target_label) continue;
    out[rule.target_label] = (rule.replacement ?? "$1").replace(
      /\$(\d)/g,
      (_, i) => match[i] ?? "",
    );
  }
  return out;
}

test("the cluster's scrape config gives each pod the job the rules read, on its metrics port", async (t) => {
  const objects = parse(await build(OVERLAY_DIRS.production));
  const [scrape] = kubernetesPrometheusConfig().scrape_configs as { relabel_configs: Relabel[] }[];
  const jobs = new Set(Object.keys(localTargets().services)).add("envoy");
  const scraped: string[] = [];
  for (const deployment of objects.filter((object) => object.kind === "Deployment")) {
    const template = deployment.spec.template;
    const meta = (prefix: string, values: Record<string, string>) =>
      Object.fromEntries(
        Object.entries(values).map(([key, value]) => [
          `__meta_kubernetes_pod_${prefix}_${key.replace(/[^a-zA-Z0-9_]/g, "_")}`,
          value,
        ]),
      );
    // As Kubernetes discovery gives it: one target per declared port of the pod's container.
    const ports = template.spec.containers[0].ports as { containerPort: number }[];
    for (const [ip, host] of [
      ["10.0.0.7", "10.0.0.7"],
      ["fd00::7", "[fd00::7]"],
    ] as const) {
      for (const port of ports) {
        const target = relabel(
          {
            __address__: ip.includes(":")
              ? `[${ip}]:${port.containerPort}`
              : `${ip}:${port.containerPort}`,
            __meta_kubernetes_pod_ip: ip,
            __metrics_path__: "/metrics",
            __meta_kubernetes_pod_name: `${deployment.metadata.name}-abc`,
            __meta_kubernetes_namespace: deployment.metadata.namespace,
            ...meta("label", template.metadata.labels),
            ...meta("annotation", template.metadata.annotations ?? {}),
          },
          scrape?.relabel_configs ?? [],
        );
        if (!target) continue;
        const annotations = template.metadata.annotations;
        t.is(target.__address__, `${host}:${annotations["prometheus.io/port"]}`);
        t.is(target.__metrics_path__, annotations["prometheus.io/path"] ?? "/metrics");
        t.true(jobs.has(target.job ?? ""), `job ${target.job}`);
        scraped.push(target.job as string);
      }
    }
  }
  t.deepEqual([...new Set(scraped)].sort(), [...jobs].sort());
});
