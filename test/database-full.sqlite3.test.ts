// database-full.test.ts again on SQLite through the sqlite3 driver.
import "./helpers/on-sqlite3.js";
import "./database-full.test.js";
