// What the deployments (compose, Kubernetes) set in and mount into the containers, in one place:
// the variables the kit reads, the Secrets an operator creates, and where they are mounted. The
// generators read these; the README's "Deploy" section lists them for operators.
import { DEV_AUDIENCE, PRODUCTION_ISSUER } from "../kit/security/security.js";

/** The shopmesh image (the root Dockerfile); overlays and `docker build -t` set its tag. */
export const IMAGE = "shopmesh";

/** The Envoy image: the same release as .tools/bin/envoy (scripts/requirements-tools.txt). */
export const ENVOY_IMAGE = "envoyproxy/envoy:v1.40.0";

/** The uid and gid the image runs as (the node user of the Node.js image), and Envoy's. */
export const APP_UID = 1000;
export const ENVOY_UID = 101;

/** Where the image keeps its compiled files and the descriptor set reflection serves. */
export const APP_DIR = "/app";
export const DESCRIPTOR_IN_IMAGE = `${APP_DIR}/dist/gen/descriptor/shop.binpb`;

/** The memory limit of Envoy's container in Kubernetes, MiB. */
export const ENVOY_MEMORY_LIMIT_MIB = 256;

/**
 * The memory Envoy's container requests, MiB: about what it holds, so that the scheduler places
 * it where that fits and the kubelet, short of memory, does not evict it first for using more
 * than it asked. Loading the cluster's config alone takes Envoy to 75 MiB.
 */
export const ENVOY_MEMORY_REQUEST_MIB = 128;

/**
 * Envoy's heap budget, MiB: its overload manager acts as the heap nears it. The rest of the
 * container's limit is Envoy's binary and what its allocator keeps (an idle Envoy's RSS is about
 * 100 MB with a heap of 10).
 */
export const ENVOY_HEAP_MIB = 128;

/** The memory limit of a service's container in Kubernetes, MiB. */
export const SERVICE_MEMORY_LIMIT_MIB = 256;

/**
 * The memory a service's container requests, MiB: what a service holds under load with the old
 * generation capped (OLD_SPACE_MB), 130–144 MiB, so that a busy pod is not the first the kubelet
 * evicts for using more than it asked.
 */
export const SERVICE_MEMORY_REQUEST_MIB = 160;

/**
 * The most V8's old generation may hold, MB. Unbounded, V8 sized it to the load it had seen:
 * 175–218 MiB of RSS after 30,000 CreateOrders, near the container's limit, where the kernel kills
 * without a word. At 96 MB it was 130–144 MiB, at a CPU cost per CreateOrder within the
 * benchmark's noise; the live heap is about 25 MB. Past the cap, the process stops with a heap
 * error in its log instead.
 */
export const OLD_SPACE_MB = 96;

/**
 * Node's options in the image (its NODE_OPTIONS), and wherever the compiled services run
 * (scripts/lib/launcher.ts, the benchmark). The old generation is capped at OLD_SPACE_MB. The
 * young generation is at most 4 MB per semi-space, down from V8's 16: start-up's allocations grow
 * it to the maximum and an idle process never gives it back. 4 MB takes 7 MB off an idle
 * service's RSS and caps a busy one's young generation at 8 MB instead of 32, at a CPU cost per
 * call within the benchmark's noise; 2 MB took 4 MB more and cost about a tenth more CPU per
 * CreateOrder (README "Performance"). `--expose-gc` lets a service compact its heap as it begins
 * to serve and whenever its calls quieten (kit/heap.ts), which gives that young generation back.
 */
export const NODE_OPTIONS = `--max-semi-space-size=4 --max-old-space-size=${OLD_SPACE_MB} --expose-gc`;

/**
 * glibc's malloc arenas per process (MALLOC_ARENA_MAX), in the image and wherever the compiled
 * services run. Unset, glibc gives the threads that allocate (V8's compiler and GC threads,
 * libuv's pool) up to 8 arenas per core, and each keeps what was freed in it. With 2, a service
 * held 5–11 MiB less RSS after 20,000 CreateOrders; idle RSS and CPU per CreateOrder were within
 * the benchmark's noise (README "Performance").
 */
export const MALLOC_ARENA_MAX = "2";

/** The environment a compiled service runs with: the image's ENV, the benchmark's processes. */
export const RUNTIME_ENV: Readonly<Record<string, string>> = { NODE_OPTIONS, MALLOC_ARENA_MAX };

/** The data directory inside a container: SQLite files, when a service uses SQLite. */
export const DATA_DIR = "/data";

/** How long SIGTERM waits for in-flight calls (SHOP_SHUTDOWN_GRACE_MS), in every container. */
export const SHUTDOWN_GRACE_MS = 10_000;

/**
 * How long a stopping container keeps serving with health NOT_SERVING before it refuses calls
 * (SHOP_SHUTDOWN_ANNOUNCE_MS): two of Envoy's health checks, a second apart, so that Envoy has
 * taken it out before a call of its is refused.
 */
export const SHUTDOWN_ANNOUNCE_MS = 2_000;

/**
 * Seconds a container may take to stop once its calls are drained or its grace is over: a
 * PostgreSQL statement in flight runs to its timeout and the driver's reply margin (7 s), the
 * last spans are exported (3 s at most, kit/runtime/run.ts), the log is flushed and the database
 * closed.
 */
export const STOPPING_AFTER_GRACE_S = 12;

/** Seconds from SIGTERM until a container must have stopped: its announcement, grace and close. */
export const STOP_GRACE_S =
  Math.ceil((SHUTDOWN_ANNOUNCE_MS + SHUTDOWN_GRACE_MS) / 1000) + STOPPING_AFTER_GRACE_S;

/**
 * Clients that dial a DNS name (a headless Service, a compose service) reconnect, and so resolve
 * again, at least this often: a replica added by a scale-up gets calls within a minute. The grace
 * lets calls in flight on an old connection finish; a WatchOrder stream older than both is ended
 * with UNAVAILABLE and watched again by its caller.
 */
export const MAX_CONNECTION_AGE_MS = 60_000;
export const MAX_CONNECTION_AGE_GRACE_MS = 30_000;

/** The settings every service container gets, as SHOP_* variables. */
export const SERVICE_DEFAULTS: Record<string, string> = {
  SHOP_HOST: "0.0.0.0",
  SHOP_DATA_DIR: DATA_DIR,
  SHOP_LOG_LEVEL: "info",
  SHOP_SHUTDOWN_GRACE_MS: String(SHUTDOWN_GRACE_MS),
  SHOP_SHUTDOWN_ANNOUNCE_MS: String(SHUTDOWN_ANNOUNCE_MS),
  SHOP_MAX_CONNECTION_AGE_MS: String(MAX_CONNECTION_AGE_MS),
  SHOP_MAX_CONNECTION_AGE_GRACE_MS: String(MAX_CONNECTION_AGE_GRACE_MS),
};

/**
 * Each service also serves grpc.health.v1 alone, in plaintext, on its port + this
 * (SHOP_HEALTH_PORT): the kubelet's `grpc:` probes and compose's health checks cannot present a
 * mesh certificate, and the service port asks for one.
 */
export const HEALTH_PORT_OFFSET = 2000;
export const healthPortOf = (port: number) => port + HEALTH_PORT_OFFSET;

/**
 * The tokens Envoy and the services accept: issuer and audience. Envoy's config is generated with
 * them, so a change here needs `npm run deploy:config`. These are what `npm run certs --
 * --production` signs for; put your identity provider's here.
 */
export const JWT_SETTINGS: Record<string, string> = {
  SHOP_JWT_ISSUER: PRODUCTION_ISSUER,
  SHOP_JWT_AUDIENCE: DEV_AUDIENCE,
};

/**
 * `development` accepts the built-in page-token secret and the development credentials;
 * `production` refuses both. Plaintext is for loopback only in either, so every pod serves TLS.
 */
export const PROFILE_VARIABLE = "SHOP_PROFILE";

/**
 * The registry the production overlay pulls the image from, as `docker push` named it
 * (`registry.example.com/shopmesh`); unset, the image is plain `shopmesh`, which a cluster cannot
 * pull. The tag is SHOP_IMAGE_TAG's, else package.json's version (productionImageTag in
 * kubernetes/overlays.ts). A change here needs `npm run deploy:config`, which
 * writes the overlay: `kustomize edit set image` on it would be undone by the next one.
 */
export const PRODUCTION_IMAGE: string | undefined = undefined;

/**
 * The origins browsers may call the cluster's Envoy from (its CORS filter), per installation.
 * Both overlays share Envoy's config; the services do not read them.
 */
export const CLUSTER_CORS_ORIGINS: readonly string[] = ["https://shop.example.com"];

/**
 * The calls a second each caller may make through a deployment's Envoy (compose and both
 * overlays): a token's subject, or for calls without one the client's address as Envoy sees it
 * (the production overlay's LoadBalancer keeps it). Each Envoy replica counts on its own, so a
 * caller spread over n of them gets up to n times this.
 */
export const EDGE_RATE_LIMIT = { calls: 100, seconds: 1 } as const;

/**
 * The OpenTelemetry variables (kit/observability/tracing.ts, README "Operate") every service container gets:
 * none, so nothing is exported, until an operator names the installation's collector here. With
 * an OTLP/gRPC endpoint, Envoy's tracer sends its spans to the same collector at the same ratio,
 * and its span of each request is the root of the trace. For example:
 *
 *   OTEL_EXPORTER_OTLP_ENDPOINT: "http://otel-collector.observability:4317",
 *   OTEL_EXPORTER_OTLP_PROTOCOL: "grpc",
 *   OTEL_TRACES_SAMPLER: "parentbased_traceidratio",
 *   OTEL_TRACES_SAMPLER_ARG: "0.1",
 *
 * A change here needs `npm run deploy:config`; compose and Kubernetes both read it.
 */
export const TRACING_SETTINGS: Readonly<Record<string, string>> = {};

/** A Secret the production overlay references and an operator creates; never committed. */
export interface SecretMount {
  /** The Secret's name; `<identity>` stands for the mesh identity of the pod. */
  secret: string;
  /** Where its keys appear as files. */
  mountPath: string;
  /** The variable that names each file, by the Secret's key. */
  files: Record<string, string>;
}

/**
 * Each mesh identity's certificate (SAN spiffe://shopmesh/<identity>), its key and the mesh CA,
 * as a kubernetes.io/tls Secret: one per service, and "edge" for Envoy.
 */
export const TLS_SECRET: SecretMount = {
  secret: "shopmesh-tls-<identity>",
  mountPath: "/etc/shopmesh/tls",
  files: {
    "tls.crt": "SHOP_TLS_CERT_FILE",
    "tls.key": "SHOP_TLS_KEY_FILE",
    "ca.crt": "SHOP_TLS_CA_FILE",
  },
};

/** The key that signs page tokens; every replica of every service shares it. */
export const PAGE_TOKEN_SECRET: SecretMount = {
  secret: "shopmesh-page-token",
  mountPath: "/etc/shopmesh/page-token",
  files: { secret: "SHOP_PAGE_TOKEN_SECRET_FILE" },
};

/** The JWT issuer's public keys (a JWKS document), for Envoy and the services. */
export const JWKS_SECRET: SecretMount = {
  secret: "shopmesh-jwks",
  mountPath: "/etc/shopmesh/jwks",
  files: { "jwks.json": "SHOP_JWKS_FILE" },
};

/** Each service's database URL: Secret `shopmesh-database`, one key per service. */
export const DATABASE_SECRET = { secret: "shopmesh-database", variable: "SHOP_DATABASE_URL" };

/** The mesh identity of Envoy's certificate. */
export const EDGE_IDENTITY = "edge";

/** The services the demo seeder (scripts/lib/seed.ts) calls: its container gets their addresses. */
export const SEEDED_SERVICES = ["user", "product"] as const;
