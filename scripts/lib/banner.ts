// What the launchers' ready banners share, and the markers tests find them by.
import { existsSync } from "node:fs";
import path from "node:path";
import { describeLocation, isPostgresUrl, sqliteDriver } from "../../kit/db.js";
import { repoRoot } from "./launcher.js";
import type { FleetPlan } from "./plan.js";

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
