// The saga suite again on PostgreSQL: every fleet's services on a database of their own.
import "./helpers/on-postgres.js";
import "./saga/placing.test.js";
import "./saga/refusals.test.js";
import "./saga/dependencies.test.js";
import "./saga/expiry-deadlines-shutdown.test.js";
