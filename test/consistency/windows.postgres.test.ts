// windows.test.ts again on PostgreSQL: the replicas share one database.
import "../helpers/on-postgres.js";
import "./windows.test.js";
