// The newer-migrations tests again on PostgreSQL: the service's schema in a database of its own.
import "./helpers/on-postgres.js";
import "./newer-migrations.test.js";
