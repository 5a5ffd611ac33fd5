// Imported first by a variant test file: its suites keep their data on PostgreSQL.
import { useStorage } from "./storage.js";

useStorage("postgres");
