// Imported first by a variant test file: its suites keep their data on SQLite through the sqlite3 driver.
import { useStorage } from "./storage.js";

useStorage("sqlite3");
