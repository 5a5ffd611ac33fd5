// The fault suite again on PostgreSQL, with two replicas of every service on one database.
import "../helpers/on-postgres.js";
import "./suite.test.js";
