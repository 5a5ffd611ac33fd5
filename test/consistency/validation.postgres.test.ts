// validation.test.ts again on PostgreSQL: every fleet on a database of its own.
import "../helpers/on-postgres.js";
import "./validation.test.js";
