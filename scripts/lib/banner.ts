// What the launchers' ready banners share, and the markers tests find them by.
import { existsSync } from "node:fs";
import path from "node:path";
import { describeLocation, isPostgresUrl, sqliteDriver } from "../../kit/db/index.js";
import { DEV_CERTS_DIR } from "../../kit/security/security.js";
import { channelCredentials, readTls } from "../../kit/security/tls.js";
import { identityFiles, LAUNCH_ADMIN, signToken } from "./credentials.js";
import { repoRoot } from "./launcher.js";
import type { FleetPlan } from "./plan.js";
import type { SeedAccess } from "./seed.js";

/** The first line of every ready banner. */
export const READY = "shopmesh is ready";
/** The last line of `npm start`'s banner. */
export const START_BANNER_END = "Ctrl-C stops every service.";
/** The last line of `npm run mesh`'s banner. */
export const MESH_BANNER_END = "Ctrl-C stops everything.";

/** grpcurl as a banner prints it: the repo's own copy, relative to the working directory. */
export function grpcurlCommand(): string {
  const local = path.join(repoRoot, ".tools/bin/grpcurl");
  return existsSync(local) ? path.relative(process.cwd(), local) || local : "grpcurl";
}

/** A JSON body for a shell command line, in single quotes (the ids never contain one). */
export const shellJson = (body: object) => `'${JSON.stringify(body)}'`;

/** A path relative to the working directory when it lies below it. */
export function shortPath(file: string): string {
  const relative = path.relative(process.cwd(), file);
  return relative && !relative.startsWith("..") ? relative : file;
}

/** True when some service of the launch keeps its data on PostgreSQL. */
export const onPostgres = (plan: FleetPlan) => Object.values(plan.databases).some(isPostgresUrl);

/**
 * Where a launch's services keep their data, for its banner: the SQLite files and their driver,
 * or the PostgreSQL databases (passwords left out), each service in a schema named after it.
 */
export function storageLine(plan: FleetPlan, cluster?: { version: string; dir: string }): string {
  if (!onPostgres(plan)) {
    return `  data ${shortPath(plan.dataDir)} (SQLite, ${sqliteDriver()}), logs ${shortPath(plan.logDir)}`;
  }
  const urls = [...new Set(Object.values(plan.databases))].map(describeLocation);
  const server = cluster ? `PostgreSQL ${cluster.version} (in ${shortPath(cluster.dir)}) ` : "";
  return [
    `  data ${server}${urls.join(", ")}: a schema per service (${Object.keys(plan.databases).join(", ")})`,
    `  logs ${shortPath(plan.logDir)}`,
  ].join("\n");
}

export { LAUNCH_ADMIN };

/** How long the tokens a banner prints stay valid. */
const BANNER_TOKEN_TTL = 12 * 3600;

/**
 * How a launcher seeds its services: an admin's token signed with the development key, and the
 * `cli` identity when the plan runs mutual TLS.
 */
export async function launchAccess(plan: FleetPlan): Promise<SeedAccess> {
  const token = await signToken({
    user: LAUNCH_ADMIN,
    roles: ["admin"],
    ttlSeconds: BANNER_TOKEN_TTL,
  });
  return plan.tls
    ? { token, transport: channelCredentials(readTls(identityFiles(plan.tls, "cli"))) }
    : { token };
}

/**
 * The banner's token lines: what they are, `export TOKEN=…` for the demo user (when there is
 * one) and `export ADMIN_TOKEN=…`, which the commands below them use as "$TOKEN" and
 * "$ADMIN_TOKEN".
 */
export async function tokenLines(admin: string, userId: string | undefined): Promise<string[]> {
  const which = userId ? "Tokens for the demo user and for an admin" : "A token for an admin";
  const lines = [`${which} (npm run token -- --user <user_id> [--role admin] makes more):`];
  if (userId) {
    const token = await signToken({ user: userId, ttlSeconds: BANNER_TOKEN_TTL });
    lines.push(`  export TOKEN=${token}`);
  }
  lines.push(`  export ADMIN_TOKEN=${admin}`);
  return lines;
}

/** grpcurl's and curl's header flag for a bearer token in a shell variable. */
export const authFlag = (variable: "TOKEN" | "ADMIN_TOKEN") =>
  `-H "authorization: Bearer $${variable}"`;

/** A development credential file as a banner prints it. */
export const certFile = (dir: string, name: string) => shortPath(path.join(dir, name));

export { DEV_CERTS_DIR };
