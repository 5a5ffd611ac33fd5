// deploy/k8s, generated from the registry and the descriptor set: a kustomize base with, per
// service, a Deployment (native gRPC probes, a restricted securityContext, a termination grace
// that covers the server's shutdown grace), a headless Service, a PodDisruptionBudget and the
// NetworkPolicy of the trust model; Envoy in front with its config in a ConfigMap; and two
// overlays, development (SQLite, one replica each) and production (PostgreSQL, mTLS and JWT
// material from Secrets, two to four replicas scaled on CPU). See deploy/README.md.
import { stringify } from "yaml";
import type { RegisteredService, ServiceRegistry } from "../kit/registry.js";
import { serviceVariable } from "../kit/registry.js";
import { registry as defaultRegistry } from "../services/registry.js";
import { envoyYaml } from "./envoy/config.js";
import { dnsTopology, type EnvoyTopology } from "./envoy/topology.js";
import {
  APP_UID,
  DATA_DIR,
  DATABASE_SECRET,
  DESCRIPTOR_IN_IMAGE,
  EDGE_IDENTITY,
  ENVOY_IMAGE,
  ENVOY_MEMORY_LIMIT_MIB,
  ENVOY_UID,
  healthPortOf,
  IMAGE,
  JWKS_SECRET,
  JWT_SETTINGS,
  PAGE_TOKEN_SECRET,
  PRODUCTION_SETTINGS,
  PROFILE_VARIABLE,
  SERVICE_DEFAULTS,
  SERVICE_MEMORY_LIMIT_MIB,
  type SecretMount,
  SHUTDOWN_GRACE_MS,
  TLS_SECRET,
} from "./settings.js";

/** Where the files go, relative to the repo root. */
export const K8S_DIR = "deploy/k8s";

/** The overlays: what each runs. */
export const OVERLAYS = {
  development: { namespace: "shopmesh-dev", replicas: 1, tag: "dev" },
  // replicas is the autoscalers' floor; they add pods up to maxReplicas.
  production: { namespace: "shopmesh", replicas: 2, maxReplicas: 4, tag: "0.1.0" },
} as const;

/**
 * The CPU each production pod requests: half a core. A service serves on one thread (its limit
 * is one core), and its queue grows well before that thread is busy all the time.
 */
export const PRODUCTION_CPU_REQUEST = "500m";

/** The share of its CPU request a production pod may average before its autoscaler adds one. */
export const SCALE_AT_UTILIZATION = 80;

/** Envoy's CPU limit in cores, and so its worker threads (its default is one per node core). */
export const ENVOY_CPU_CORES = 1;

/** The pods a rollout adds before it stops old ones. */
const SURGE = 1;

/** The connections a PostgreSQL server takes by default: max_connections less superusers' 3. */
export const POSTGRES_CONNECTIONS = 97;

/** The front door's ports inside the cluster. */
export const ENVOY_PORT = 8080;
/** Envoy's stats listener: GET /metrics in Prometheus's format, nothing of the admin interface. */
export const ENVOY_STATS_PORT = 9902;
/** Namespaces with these labels may scrape the metrics ports (NetworkPolicies). */
export const MONITORING_NAMESPACE_LABELS = { "shopmesh.io/monitoring": "true" };
const ENVOY_ADMIN_PORT = 9901;
const DESCRIPTOR_DIR = "/descriptor";

/** Seconds a pod keeps serving after it is told to stop, while it leaves the endpoints. */
export const PRE_STOP_SLEEP_S = 5;
/** Seconds Envoy drains its listeners before it exits. */
const ENVOY_DRAIN_S = 10;
/**
 * Kubernetes kills a pod this long after it starts stopping: the preStop sleep, the server's
 * whole shutdown grace, and time to flush logs and close the database.
 */
export const TERMINATION_GRACE_S = PRE_STOP_SLEEP_S + Math.ceil(SHUTDOWN_GRACE_MS / 1000) + 5;

const PART_OF = "shopmesh";
const CONFIG_MAP = "shopmesh";

const labels = (name: string, component: "service" | "edge") => ({
  "app.kubernetes.io/name": name,
  "app.kubernetes.io/component": component,
  "app.kubernetes.io/part-of": PART_OF,
});
const selector = (name: string) => ({ "app.kubernetes.io/name": name });

/** Non-root, read-only, no privileges: what Pod Security "restricted" asks of a container. */
const containerSecurity = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ["ALL"] },
};
const podSecurity = (uid: number) => ({
  runAsNonRoot: true,
  runAsUser: uid,
  runAsGroup: uid,
  fsGroup: uid,
  seccompProfile: { type: "RuntimeDefault" },
});

/** One replica per node where the cluster allows it. */
const spread = (name: string) => [
  {
    maxSkew: 1,
    topologyKey: "kubernetes.io/hostname",
    whenUnsatisfiable: "ScheduleAnyway",
    labelSelector: { matchLabels: selector(name) },
  },
];

/** The proto service a readiness probe and Envoy's health check ask about. */
const checkedService = (service: RegisteredService) => service.protoServices[0] as string;

/**
 * What every pod of the mesh mounts, in both overlays: its mTLS identity (plaintext is for
 * loopback only) and the JWKS tokens are checked with.
 */
const meshMounts = (identity: string) => [
  secretPatch(TLS_SECRET, identity, "tls"),
  secretPatch(JWKS_SECRET, identity, "jwks"),
];

function serviceDeployment(service: RegisteredService, registry: ServiceRegistry) {
  const { name, port } = service;
  const health = healthPortOf(port);
  const mounts = meshMounts(name);
  const env = [
    { name: "SHOP_SERVICE", value: name },
    { name: "SHOP_PORT", value: String(port) },
    { name: "SHOP_HEALTH_PORT", value: String(health) },
    { name: "SHOP_METRICS_PORT", value: String(service.metricsPort) },
    ...mounts.flatMap((mount) => mount.env),
    // A DNS name of a headless Service: every ready pod is an address, balanced round_robin.
    ...service.dependencies.map((dependency) => ({
      name: serviceVariable(dependency, "ADDR"),
      value: `${dependency}:${registry.get(dependency).port}`,
    })),
  ];
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, labels: labels(name, "service") },
    spec: {
      replicas: OVERLAYS.production.replicas,
      revisionHistoryLimit: 5,
      selector: { matchLabels: selector(name) },
      // A new pod is ready before an old one stops.
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: SURGE } },
      template: {
        metadata: { labels: labels(name, "service"), annotations: scrape(service.metricsPort) },
        spec: {
          serviceAccountName: name,
          automountServiceAccountToken: false,
          // No <SERVICE>_PORT variables from the cluster's Services in the environment.
          enableServiceLinks: false,
          terminationGracePeriodSeconds: TERMINATION_GRACE_S,
          securityContext: podSecurity(APP_UID),
          topologySpreadConstraints: spread(name),
          containers: [
            {
              name,
              image: IMAGE,
              imagePullPolicy: "IfNotPresent",
              ports: [
                { name: "grpc", containerPort: port, protocol: "TCP" },
                { name: "health", containerPort: health, protocol: "TCP" },
                { name: "metrics", containerPort: service.metricsPort, protocol: "TCP" },
              ],
              envFrom: [{ configMapRef: { name: CONFIG_MAP } }],
              env,
              // grpc.health.v1, asked by the kubelet itself: no process per probe. The service
              // port asks for a mesh certificate, which the kubelet cannot present, so it asks the
              // health-only port (SHOP_HEALTH_PORT, the same statuses, nothing else served).
              // Startup allows for migrations; readiness is the proto service's status,
              // NOT_SERVING from the first moment of a shutdown; liveness the server's ("").
              startupProbe: { grpc: { port: health }, periodSeconds: 1, failureThreshold: 60 },
              readinessProbe: {
                grpc: { port: health, service: checkedService(service) },
                periodSeconds: 2,
                timeoutSeconds: 1,
                failureThreshold: 1,
              },
              livenessProbe: {
                grpc: { port: health },
                periodSeconds: 10,
                timeoutSeconds: 2,
                failureThreshold: 3,
              },
              // Keep serving while the endpoints (and the callers' DNS) drop this pod; SIGTERM
              // then turns health NOT_SERVING and drains in-flight calls (SHOP_SHUTDOWN_GRACE_MS).
              lifecycle: { preStop: { sleep: { seconds: PRE_STOP_SLEEP_S } } },
              resources: {
                requests: { cpu: "100m", memory: `${SERVICE_MEMORY_LIMIT_MIB / 2}Mi` },
                limits: { cpu: "1", memory: `${SERVICE_MEMORY_LIMIT_MIB}Mi` },
              },
              securityContext: containerSecurity,
              volumeMounts: [
                { name: "data", mountPath: DATA_DIR },
                { name: "tmp", mountPath: "/tmp" },
                ...mounts.map((mount) => mount.mount),
              ],
            },
          ],
          volumes: [
            { name: "data", emptyDir: {} },
            { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
            ...mounts.map((mount) => mount.volume),
          ],
        },
      },
    },
  };
}

/** Headless: DNS answers with every ready pod, so Envoy and round_robin callers see them all. */
function headlessService(service: RegisteredService) {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: service.name, labels: labels(service.name, "service") },
    spec: {
      clusterIP: "None",
      selector: selector(service.name),
      ports: [
        {
          name: "grpc",
          port: service.port,
          targetPort: "grpc",
          // No appProtocol: kubernetes.io/h2c means cleartext, and this port serves mutual TLS.
          protocol: "TCP",
        },
      ],
    },
  };
}

/** A voluntary disruption (a node drain) takes at most one pod of a service at a time. */
/**
 * A workload's own identity in the cluster, never the namespace's default: RBAC, or a cloud's
 * workload identity (a database login, say), is granted to one service. No token is mounted.
 */
function serviceAccount(name: string, component: "service" | "edge") {
  return {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: { name, labels: labels(name, component) },
    automountServiceAccountToken: false,
  };
}

function disruptionBudget(name: string, component: "service" | "edge") {
  return {
    apiVersion: "policy/v1",
    kind: "PodDisruptionBudget",
    metadata: { name, labels: labels(name, component) },
    spec: {
      maxUnavailable: 1,
      selector: { matchLabels: selector(name) },
      unhealthyPodEvictionPolicy: "AlwaysAllow",
    },
  };
}

/**
 * Production's autoscaler of a Deployment, on CPU. It removes one pod a minute at most: each pod
 * that goes drains its calls first, and its callers connect again elsewhere.
 */
function autoscaler(name: string, component: "service" | "edge") {
  const { replicas, maxReplicas } = OVERLAYS.production;
  return {
    apiVersion: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    metadata: { name, labels: labels(name, component) },
    spec: {
      scaleTargetRef: { apiVersion: "apps/v1", kind: "Deployment", name },
      minReplicas: replicas,
      maxReplicas,
      metrics: [
        {
          type: "Resource",
          resource: {
            name: "cpu",
            target: { type: "Utilization", averageUtilization: SCALE_AT_UTILIZATION },
          },
        },
      ],
      behavior: {
        scaleDown: {
          stabilizationWindowSeconds: 300,
          policies: [{ type: "Pods", value: 1, periodSeconds: 60 }],
        },
      },
    },
  };
}

/**
 * Who may open a connection to a service's port: Envoy for a public service, and the services
 * that call it (the registry's dependencies). The port is the unit here; which rpcs an identity
 * may call on it (the internal inventory API of the product process, for one) is checked by the
 * service against the caller's mTLS identity.
 */
export function callersOf(service: RegisteredService, registry: ServiceRegistry): string[] {
  return [
    ...(service.publicServices.length > 0 ? ["envoy"] : []),
    ...registry.services
      .filter((caller) => caller.dependencies.includes(service.name))
      .map((caller) => caller.name),
  ];
}

function servicePolicy(service: RegisteredService, registry: ServiceRegistry) {
  return {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name: service.name, labels: labels(service.name, "service") },
    spec: {
      podSelector: { matchLabels: selector(service.name) },
      policyTypes: ["Ingress"],
      ingress: [
        {
          from: callersOf(service, registry).map((caller) => ({
            podSelector: { matchLabels: selector(caller) },
          })),
          ports: [{ protocol: "TCP", port: service.port }],
        },
        scrapers(service.metricsPort),
      ],
    },
  };
}

/** Prometheus's pod annotations: where this pod serves its metrics. */
const scrape = (port: number) => ({
  "prometheus.io/scrape": "true",
  "prometheus.io/port": String(port),
  "prometheus.io/path": "/metrics",
});

/** The metrics port, open to the namespaces labelled as monitoring (where Prometheus runs). */
const scrapers = (port: number) => ({
  from: [{ namespaceSelector: { matchLabels: MONITORING_NAMESPACE_LABELS } }],
  ports: [{ protocol: "TCP", port }],
});

/** Nothing reaches a pod of the namespace unless a policy below lets it. */
const defaultDeny = {
  apiVersion: "networking.k8s.io/v1",
  kind: "NetworkPolicy",
  metadata: { name: "default-deny-ingress", labels: { "app.kubernetes.io/part-of": PART_OF } },
  spec: { podSelector: {}, policyTypes: ["Ingress"] },
};

/**
 * Envoy's listener is the front door: open to any client; its stats listener to the monitoring
 * namespaces; its admin port stays on loopback.
 */
const envoyPolicy = {
  apiVersion: "networking.k8s.io/v1",
  kind: "NetworkPolicy",
  metadata: { name: "envoy", labels: labels("envoy", "edge") },
  spec: {
    podSelector: { matchLabels: selector("envoy") },
    policyTypes: ["Ingress"],
    ingress: [{ ports: [{ protocol: "TCP", port: ENVOY_PORT }] }, scrapers(ENVOY_STATS_PORT)],
  },
};

/** A mounted Secret's file, by its key. */
const mounted = (mount: SecretMount, key: string) => `${mount.mountPath}/${key}`;

/**
 * Envoy in the cluster: every public service by the DNS name of its headless Service, TLS at the
 * edge and mutual TLS to the services with the edge's identity, tokens of JWT_SETTINGS checked.
 */
export function kubernetesTopology(registry: ServiceRegistry = defaultRegistry): EnvoyTopology {
  return {
    ...dnsTopology(registry),
    listen: { address: "0.0.0.0", port: ENVOY_PORT },
    admin: { address: "127.0.0.1", port: ENVOY_ADMIN_PORT },
    stats: { address: "0.0.0.0", port: ENVOY_STATS_PORT },
    descriptorPath: `${DESCRIPTOR_DIR}/shop.binpb`,
    tls: {
      cert: mounted(TLS_SECRET, "tls.crt"),
      key: mounted(TLS_SECRET, "tls.key"),
      ca: mounted(TLS_SECRET, "ca.crt"),
    },
    jwt: {
      jwksPath: mounted(JWKS_SECRET, "jwks.json"),
      issuer: JWT_SETTINGS.SHOP_JWT_ISSUER as string,
      audience: JWT_SETTINGS.SHOP_JWT_AUDIENCE as string,
    },
    corsOrigins: (PRODUCTION_SETTINGS.SHOP_CORS_ORIGINS ?? "").split(",").filter(Boolean),
  };
}

/** bash, because the Envoy image has no curl: one request to the admin interface on loopback. */
const admin = (method: string, pathAndQuery: string, then: string) =>
  `exec 3<>/dev/tcp/127.0.0.1/${ENVOY_ADMIN_PORT} && printf '${method} ${pathAndQuery} HTTP/1.1\\r\\nHost: localhost\\r\\nContent-Length: 0\\r\\nConnection: close\\r\\n\\r\\n' >&3 && ${then}`;

function envoyDeployment() {
  const mounts = meshMounts(EDGE_IDENTITY);
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name: "envoy", labels: labels("envoy", "edge") },
    spec: {
      replicas: OVERLAYS.production.replicas,
      revisionHistoryLimit: 5,
      selector: { matchLabels: selector("envoy") },
      strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 0, maxSurge: SURGE } },
      template: {
        metadata: { labels: labels("envoy", "edge"), annotations: scrape(ENVOY_STATS_PORT) },
        spec: {
          serviceAccountName: "envoy",
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          terminationGracePeriodSeconds: ENVOY_DRAIN_S + 10,
          securityContext: podSecurity(ENVOY_UID),
          topologySpreadConstraints: spread("envoy"),
          // The transcoder needs the descriptor set of the very image the services run.
          initContainers: [
            {
              name: "descriptor",
              image: IMAGE,
              imagePullPolicy: "IfNotPresent",
              command: ["cp", DESCRIPTOR_IN_IMAGE, `${DESCRIPTOR_DIR}/shop.binpb`],
              resources: {
                requests: { cpu: "10m", memory: "16Mi" },
                limits: { cpu: "100m", memory: "32Mi" },
              },
              securityContext: containerSecurity,
              volumeMounts: [{ name: "descriptor", mountPath: DESCRIPTOR_DIR }],
            },
          ],
          containers: [
            {
              name: "envoy",
              image: ENVOY_IMAGE,
              imagePullPolicy: "IfNotPresent",
              command: ["envoy"],
              args: [
                ...["-c", "/etc/envoy/envoy.yaml", "--disable-hot-restart"],
                ...["--drain-time-s", String(ENVOY_DRAIN_S), "--log-level", "info"],
                ...["--concurrency", String(ENVOY_CPU_CORES)],
              ],
              ports: [
                { name: "http", containerPort: ENVOY_PORT, protocol: "TCP" },
                { name: "metrics", containerPort: ENVOY_STATS_PORT, protocol: "TCP" },
              ],
              // The admin's /ready through the stats listener: no process per probe.
              readinessProbe: {
                httpGet: { path: "/ready", port: ENVOY_STATS_PORT },
                periodSeconds: 5,
                timeoutSeconds: 2,
              },
              livenessProbe: {
                tcpSocket: { port: ENVOY_PORT },
                periodSeconds: 10,
                failureThreshold: 3,
              },
              // Drain: connections are told to go away, new ones still land, for ENVOY_DRAIN_S.
              lifecycle: {
                preStop: {
                  exec: {
                    command: [
                      "bash",
                      "-c",
                      admin(
                        "POST",
                        "/drain_listeners?graceful",
                        `cat <&3 >/dev/null; sleep ${ENVOY_DRAIN_S}`,
                      ),
                    ],
                  },
                },
              },
              resources: {
                requests: { cpu: "100m", memory: "64Mi" },
                limits: { cpu: String(ENVOY_CPU_CORES), memory: `${ENVOY_MEMORY_LIMIT_MIB}Mi` },
              },
              securityContext: containerSecurity,
              volumeMounts: [
                { name: "config", mountPath: "/etc/envoy", readOnly: true },
                { name: "descriptor", mountPath: DESCRIPTOR_DIR, readOnly: true },
                { name: "tmp", mountPath: "/tmp" },
                // Envoy reads these by the paths its config names, not from variables.
                ...mounts.map((mount) => mount.mount),
              ],
            },
          ],
          volumes: [
            { name: "config", configMap: { name: "envoy" } },
            { name: "descriptor", emptyDir: { sizeLimit: "16Mi" } },
            { name: "tmp", emptyDir: { sizeLimit: "64Mi" } },
            ...mounts.map((mount) => mount.volume),
          ],
        },
      },
    },
  };
}

const envoyService = {
  apiVersion: "v1",
  kind: "Service",
  metadata: { name: "envoy", labels: labels("envoy", "edge") },
  spec: {
    selector: selector("envoy"),
    ports: [{ name: "http", port: ENVOY_PORT, targetPort: "http", protocol: "TCP" }],
  },
};

const HEADER = (what: string) =>
  [
    `# ${what}`,
    "# Generated by deploy/generate.ts from services/registry.ts: do not edit; run npm run deploy:config.",
    "",
  ].join("\n");

const documents = (what: string, objects: readonly object[]) =>
  HEADER(what) +
  objects
    .map((object) =>
      stringify(object, { lineWidth: 0, aliasDuplicateObjects: false, version: "1.1" }),
    )
    .join("---\n");

/** Mounts a Secret's keys as files and names each file in a variable. */
function secretPatch(mount: SecretMount, identity: string, volume: string) {
  return {
    env: Object.entries(mount.files).map(([key, variable]) => ({
      name: variable,
      value: `${mount.mountPath}/${key}`,
    })),
    mount: { name: volume, mountPath: mount.mountPath, readOnly: true },
    volume: {
      name: volume,
      // Readable by the pod's group (fsGroup) only.
      secret: { secretName: mount.secret.replace("<identity>", identity), defaultMode: 0o440 },
    },
  };
}

/** Production adds a service's database URL and the page-token key, both from Secrets. */
function productionPatch(name: string) {
  const mounts = [secretPatch(PAGE_TOKEN_SECRET, name, "page-token")];
  const env = [
    {
      name: DATABASE_SECRET.variable,
      valueFrom: { secretKeyRef: { name: DATABASE_SECRET.secret, key: name } },
    },
    ...mounts.flatMap((mount) => mount.env),
  ];
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name },
    spec: {
      template: {
        spec: {
          containers: [
            {
              name,
              env,
              volumeMounts: mounts.map((mount) => mount.mount),
            },
          ],
          volumes: mounts.map((mount) => mount.volume),
        },
      },
    },
  };
}

function developmentPatch(name: string) {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name },
    spec: {
      // One pod at a time on the SQLite volume (ReadWriteOnce).
      strategy: { type: "Recreate", rollingUpdate: null },
      template: {
        spec: {
          volumes: [
            { name: "data", emptyDir: null, persistentVolumeClaim: { claimName: `${name}-data` } },
          ],
        },
      },
    },
  };
}

const claim = (name: string) => ({
  apiVersion: "v1",
  kind: "PersistentVolumeClaim",
  metadata: { name: `${name}-data`, labels: labels(name, "service") },
  spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
});

/** Pod Security "restricted" is enforced: every pod here meets it. */
const namespace = (name: string) => ({
  apiVersion: "v1",
  kind: "Namespace",
  metadata: {
    name,
    labels: {
      "pod-security.kubernetes.io/enforce": "restricted",
      "pod-security.kubernetes.io/enforce-version": "latest",
    },
  },
});

const literals = (settings: Record<string, string>) =>
  Object.entries(settings).map(([key, value]) => `${key}=${value}`);

/** Every file of deploy/k8s, by path relative to the repo root. */
export function kubernetesFiles(
  registry: ServiceRegistry = defaultRegistry,
): Record<string, string> {
  const base = `${K8S_DIR}/base`;
  const files: Record<string, string> = {};
  const names = registry.names as string[];

  for (const service of registry.services) {
    files[`${base}/${service.name}.yaml`] = documents(
      `The ${service.name} service: ${service.protoServices.join(", ")}.`,
      [
        serviceDeployment(service, registry),
        serviceAccount(service.name, "service"),
        headlessService(service),
        disruptionBudget(service.name, "service"),
        servicePolicy(service, registry),
      ],
    );
  }
  files[`${base}/envoy.yaml`] = documents("Envoy, the front door.", [
    envoyDeployment(),
    serviceAccount("envoy", "edge"),
    envoyService,
    disruptionBudget("envoy", "edge"),
    envoyPolicy,
  ]);
  files[`${base}/network-policy.yaml`] = documents(
    "Ingress is denied unless a service's own policy allows it.",
    [defaultDeny],
  );
  files[`${base}/envoy/envoy.yaml`] = envoyYaml(
    kubernetesTopology(registry),
    undefined,
    HEADER(
      "Envoy in Kubernetes: each service by its headless Service's name (every ready pod is a host).",
    ),
  );
  files[`${base}/kustomization.yaml`] = documents("The base both overlays build on.", [
    {
      apiVersion: "kustomize.config.k8s.io/v1beta1",
      kind: "Kustomization",
      resources: [...names.map((name) => `${name}.yaml`), "envoy.yaml", "network-policy.yaml"],
      configMapGenerator: [
        { name: CONFIG_MAP, literals: literals({ ...SERVICE_DEFAULTS, ...JWT_SETTINGS }) },
        { name: "envoy", files: ["envoy.yaml=envoy/envoy.yaml"] },
      ],
    },
  ]);

  const dev = OVERLAYS.development;
  const devDir = `${K8S_DIR}/overlays/development`;
  files[`${devDir}/namespace.yaml`] = documents("The development namespace.", [
    namespace(dev.namespace),
  ]);
  files[`${devDir}/storage.yaml`] = documents(
    "A SQLite volume per service: one replica each, so nothing is shared across nodes.",
    names.map(claim),
  );
  for (const name of names) {
    files[`${devDir}/${name}.yaml`] = documents(`${name}: its SQLite file on its volume.`, [
      developmentPatch(name),
    ]);
  }
  files[`${devDir}/kustomization.yaml`] = documents(
    "Development: SQLite on a volume per service, one replica each; the mTLS and JWKS Secrets of the base (deploy/README.md).",
    [
      {
        apiVersion: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        namespace: dev.namespace,
        resources: ["../../base", "namespace.yaml", "storage.yaml"],
        replicas: [...names, "envoy"].map((name) => ({ name, count: dev.replicas })),
        images: [{ name: IMAGE, newTag: dev.tag }],
        configMapGenerator: [
          {
            name: CONFIG_MAP,
            behavior: "merge",
            literals: literals({ [PROFILE_VARIABLE]: "development" }),
          },
        ],
        patches: names.map((name) => ({ path: `${name}.yaml` })),
      },
    ],
  );

  const prod = OVERLAYS.production;
  const prodDir = `${K8S_DIR}/overlays/production`;
  // Every pod at the autoscalers' ceiling, and a rollout's extra pod, fit one server's default.
  const poolMax = Math.max(
    1,
    Math.floor(POSTGRES_CONNECTIONS / ((prod.maxReplicas + SURGE) * names.length)),
  );
  files[`${prodDir}/namespace.yaml`] = documents("The production namespace.", [
    namespace(prod.namespace),
  ]);
  for (const name of names) {
    files[`${prodDir}/${name}.yaml`] = documents(
      `${name}: its database URL and the page-token key, from Secrets.`,
      [productionPatch(name)],
    );
  }
  files[`${prodDir}/autoscaling.yaml`] = documents(
    `An autoscaler per Deployment: ${prod.replicas} to ${prod.maxReplicas} pods, as many as keep their CPU at ${SCALE_AT_UTILIZATION}% of what each requests (${PRODUCTION_CPU_REQUEST}) or under.`,
    [
      ...registry.services.map((service) => autoscaler(service.name, "service")),
      autoscaler("envoy", "edge"),
    ],
  );
  files[`${prodDir}/kustomization.yaml`] = documents(
    "Production: PostgreSQL and the page-token key from Secrets (with the base's mTLS and JWKS), each Deployment scaled on CPU. The operator creates the Secrets (deploy/README.md).",
    [
      {
        apiVersion: "kustomize.config.k8s.io/v1beta1",
        kind: "Kustomization",
        namespace: prod.namespace,
        resources: ["../../base", "namespace.yaml", "autoscaling.yaml"],
        images: [{ name: IMAGE, newTag: prod.tag }],
        configMapGenerator: [
          {
            name: CONFIG_MAP,
            behavior: "merge",
            literals: literals({
              [PROFILE_VARIABLE]: "production",
              ...PRODUCTION_SETTINGS,
              SHOP_DATABASE_POOL_MAX: String(poolMax),
            }),
          },
        ],
        patches: [
          ...names.map((name) => ({ path: `${name}.yaml` })),
          {
            // The autoscalers own the pod counts: a count here would reset theirs at every apply.
            // Each pod requests the CPU its autoscaler plans with.
            target: { kind: "Deployment" },
            patch: stringify([
              { op: "remove", path: "/spec/replicas" },
              {
                op: "replace",
                path: "/spec/template/spec/containers/0/resources/requests/cpu",
                value: PRODUCTION_CPU_REQUEST,
              },
            ]),
          },
          {
            // The front door gets an address outside the cluster.
            target: { kind: "Service", name: "envoy" },
            patch: stringify([{ op: "add", path: "/spec/type", value: "LoadBalancer" }]),
          },
        ],
      },
    ],
  );
  return files;
}
