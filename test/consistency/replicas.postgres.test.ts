// The cross-replica promises again, two replicas of every service on one PostgreSQL database.
import "../helpers/on-postgres.js";
import "./replicas.test.js";
