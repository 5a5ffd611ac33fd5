// What every pod of the mesh shares, a service's or Envoy's: security contexts, spread over nodes,
// mounted Secrets, an account of its own, the scrape annotations, the surge of a rollout.

import { JWKS_SECRET, type SecretMount, TLS_SECRET } from "../settings.js";
import { labels, selector } from "./labels.js";

/** The pods a rollout adds before it stops old ones. */
export const SURGE = 1;

/** Non-root, read-only, no privileges: what Pod Security "restricted" asks of a container. */
export const containerSecurity = {
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  runAsNonRoot: true,
  capabilities: { drop: ["ALL"] },
};
export const podSecurity = (uid: number) => ({
  runAsNonRoot: true,
  runAsUser: uid,
  runAsGroup: uid,
  fsGroup: uid,
  seccompProfile: { type: "RuntimeDefault" },
});

/** One replica per node where the cluster allows it. */
export const spread = (name: string) => [
  {
    maxSkew: 1,
    topologyKey: "kubernetes.io/hostname",
    whenUnsatisfiable: "ScheduleAnyway",
    labelSelector: { matchLabels: selector(name) },
  },
];

/**
 * What every pod of the mesh mounts, in both overlays: its mTLS identity (plaintext is for
 * loopback only) and the JWKS tokens are checked with.
 */
export const meshMounts = (identity: string) => [
  secretPatch(TLS_SECRET, identity, "tls"),
  secretPatch(JWKS_SECRET, identity, "jwks"),
];

/** Mounts a Secret's keys as files and names each file in a variable. */
export function secretPatch(mount: SecretMount, identity: string, volume: string) {
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

/**
 * A workload's own identity in the cluster, never the namespace's default: RBAC, or a cloud's
 * workload identity (a database login, say), is granted to one service. No token is mounted.
 */
export function serviceAccount(name: string, component: "service" | "edge") {
  return {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: { name, labels: labels(name, component) },
    automountServiceAccountToken: false,
  };
}

/** Prometheus's pod annotations: where this pod serves its metrics. */
export const scrape = (port: number) => ({
  "prometheus.io/scrape": "true",
  "prometheus.io/port": String(port),
  "prometheus.io/path": "/metrics",
});
