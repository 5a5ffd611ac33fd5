// knex publishes no types for its dialect modules; statement-cache.ts states what it uses.
declare module "knex/lib/dialects/better-sqlite3/index.js" {
  const client: unknown;
  export default client;
}
