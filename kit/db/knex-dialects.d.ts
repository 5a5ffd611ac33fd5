// knex publishes no types for its dialect modules; the statement-cache files state what they use.
declare module "knex/lib/dialects/better-sqlite3/index.js" {
  const client: unknown;
  export default client;
}

declare module "knex/lib/dialects/sqlite3/index.js" {
  const client: unknown;
  export default client;
}
