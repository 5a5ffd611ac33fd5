// The two overlays' own objects: development's namespace, volumes and SQLite patches; production's
// namespace and the patches that take the database URL and page-token key from Secrets.

import { readFileSync } from "node:fs";
import { DATABASE_SECRET, PAGE_TOKEN_SECRET } from "../settings.js";
import { labels } from "./labels.js";
import { secretPatch } from "./pods.js";

/** The release these files are generated from: production runs its image. */
const { version } = JSON.parse(
  readFileSync(new URL("../../package.json", import.meta.url), "utf8"),
) as { version: string };

/** The overlays: what each runs. */
export const OVERLAYS = {
  development: { namespace: "shopmesh-dev", replicas: 1, tag: "dev" },
  // replicas is the autoscalers' floor; they add pods up to maxReplicas.
  production: { namespace: "shopmesh", replicas: 2, maxReplicas: 4, tag: version },
} as const;

/** The variable `npm run deploy:config` reads the production image's tag from. */
export const IMAGE_TAG_VARIABLE = "SHOP_IMAGE_TAG";

/**
 * The production image's tag: SHOP_IMAGE_TAG as the files are generated, else package.json's
 * version. Give each build a tag of its own (the version and the commit, say): a node pulls an
 * image only when it lacks its tag, so a build pushed again under a tag in use leaves nodes on
 * different builds, rolls nothing out, and leaves no tag to roll back to.
 */
export function productionImageTag(env: NodeJS.ProcessEnv = process.env): string {
  const tag = env[IMAGE_TAG_VARIABLE] ?? "";
  if (tag === "") return OVERLAYS.production.tag;
  if (!/^\w[\w.-]{0,127}$/.test(tag)) {
    throw new Error(
      `${IMAGE_TAG_VARIABLE} must be an image tag (letters, digits, "_", "." and "-", at most 128, not starting with "." or "-"), got ${JSON.stringify(tag)}`,
    );
  }
  return tag;
}

/** The connections a PostgreSQL server takes by default: max_connections less superusers' 3. */
export const POSTGRES_CONNECTIONS = 97;

/** Production adds a service's database URL and the page-token key, both from Secrets. */
export function productionPatch(name: string) {
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

export function developmentPatch(name: string) {
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

export const claim = (name: string) => ({
  apiVersion: "v1",
  kind: "PersistentVolumeClaim",
  metadata: { name: `${name}-data`, labels: labels(name, "service") },
  spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "1Gi" } } },
});

/** Pod Security "restricted" is enforced: every pod here meets it. */
export const namespace = (name: string) => ({
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
