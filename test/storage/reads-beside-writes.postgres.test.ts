// reads-beside-writes.test.ts again on PostgreSQL.
import "../helpers/on-postgres.js";
import "./reads-beside-writes.test.js";
