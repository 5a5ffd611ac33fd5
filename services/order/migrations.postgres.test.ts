// The order migrations' suite again on PostgreSQL.
import "../../test/helpers/on-postgres.js";
import "./migrations.test.js";
