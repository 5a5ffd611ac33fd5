// store.test.ts again on PostgreSQL.
import "../helpers/on-postgres.js";
import "./store.test.js";
