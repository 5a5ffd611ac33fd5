// The promises of the order flow again, on PostgreSQL: every fleet on a database of its own.
// (unavailable.test.ts holds SQLite's write lock on purpose, so it stays on SQLite;
// replicas.postgres.test.ts runs the cross-replica promises.)
import "../helpers/on-postgres.js";
import "./cancel.test.js";
import "./create.test.js";
import "./money.test.js";
import "./page-size.test.js";
import "./page-token.test.js";
import "./sweep.test.js";
import "./validation.test.js";
