// reads-beside-writes.test.ts again on SQLite through the sqlite3 driver.
import "../helpers/on-sqlite3.js";
import "./reads-beside-writes.test.js";
