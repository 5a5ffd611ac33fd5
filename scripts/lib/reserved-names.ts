// Names a new service cannot take, each with what already uses it, and the plural it gets: a
// service's name becomes a compose service, an mTLS identity, a file of deploy/k8s, a Prometheus
// job and SHOP_<NAME>_PORT.

const fleetClient = "names a client of the test fleets (test/helpers/fleet.ts)";
const overlayFile = (file: string) =>
  `is the name of deploy/k8s/overlays/*/${file}.yaml, which a service's patch file would replace`;

// The generated code declares the name as a variable, which these words cannot be in a module.
const JS_RESERVED = `await break case catch class const continue debugger default delete do else
enum export extends false finally for function if implements import in instanceof interface let
new null package private protected public return static super switch this throw true try typeof
var void while with yield arguments eval`.split(/\s+/);
const jsReserved = "is a reserved word in JavaScript, and the generated code declares it";

export const RESERVED_NAMES: Readonly<Record<string, string>> = {
  ...Object.fromEntries(JS_RESERVED.map((word) => [word, jsReserved])),
  google:
    "would make the package shop.google.v1, inside which protobuf looks for google.api and google.protobuf first",
  users: fleetClient,
  products: fleetClient,
  orders: fleetClient,
  inventory: fleetClient,
  envoy:
    "is the front door: its compose service, deploy/k8s/base/envoy.yaml, its Prometheus job and SHOP_ENVOY_PORT",
  seed: "is the demo seeder's compose service (deploy/compose.yaml)",
  edge: "is Envoy's mTLS identity (scripts/lib/credentials.ts)",
  cli: "is the operators' tools' mTLS identity (scripts/lib/credentials.ts)",
  prometheus: "would set SHOP_PROMETHEUS_PORT, the port of npm run mesh's Prometheus",
  health: "would set SHOP_HEALTH_PORT, every service's health-only port",
  metrics: "would set SHOP_METRICS_PORT, every service's metrics port",
  namespace: overlayFile("namespace"),
  storage: overlayFile("storage"),
  autoscaling: overlayFile("autoscaling"),
  kustomization: overlayFile("kustomization"),
};

/** Why `name` cannot be a new service's, or undefined when it can; `registered`: the registry's. */
export function nameRefusal(name: string, registered: readonly string[]): string | undefined {
  // Ending in a letter: ts-proto capitalises what follows a digit ("List" + "a1s" is listA1S).
  if (!/^[a-z][a-z0-9]{0,29}[a-z]$/.test(name)) {
    return `usage: npm run new-service -- <name>, a lower-case word such as "payment" (digits inside, not last); got "${name}"`;
  }
  if (registered.includes(name)) return `"${name}" is already registered`;
  const reserved = Object.hasOwn(RESERVED_NAMES, name) ? RESERVED_NAMES[name] : undefined;
  return reserved && `"${name}" ${reserved}; choose another name`;
}

/** The English plural of a new service's name, for its table, list rpc and REST collection. */
export function pluralOf(name: string): string {
  if (/(s|x|z|ch|sh)$/.test(name)) return `${name}es`;
  if (/[^aeiou]y$/.test(name)) return `${name.slice(0, -1)}ies`;
  return `${name}s`;
}
