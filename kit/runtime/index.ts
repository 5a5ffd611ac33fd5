// Putting a service together: startService serves one, runService runs one as its process.
export { DatabaseOpenError } from "./database.js";
export { dependencyAddresses } from "./dependencies.js";
export { runService } from "./run.js";
export { startService } from "./start.js";
export type { StartedService, StartOptions } from "./types.js";
