import { envoyYaml, localTopology } from "../deploy/envoy/config.js";

const t = localTopology(1);
process.stdout.write(envoyYaml({ ...t, corsOrigins: ["http://localhost:3000"] }));
