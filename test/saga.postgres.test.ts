// The saga suite again on PostgreSQL: every fleet's services on a database of their own.
import "./helpers/on-postgres.js";
import "./saga.test.js";
