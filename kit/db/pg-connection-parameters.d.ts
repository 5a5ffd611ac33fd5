// node-postgres publishes no types for the module that reads a connection's settings, which
// postgresTarget uses to see a URL as the driver will.
declare module "pg/lib/connection-parameters.js" {
  export default class ConnectionParameters {
    constructor(config: { connectionString: string });
    /** The host, or a Unix socket's folder (starting with "/"): the URL's, PGHOST or localhost. */
    host: string;
    /** Whether, and how, the connection speaks TLS: the URL's ssl settings, or PGSSLMODE. */
    ssl: unknown;
  }
}
