import { openDatabase } from "../db.js";
import { itemsMigrations as migrations } from "./items.fixture.js";
import { sqlSuite } from "./sql.suite.js";
import { SQLITE_DRIVERS } from "./sqlite.js";

for (const driver of SQLITE_DRIVERS) {
  sqlSuite(driver, async (t) => {
    const db = await openDatabase(":memory:", migrations, { sqliteDriver: driver });
    t.teardown(() => db.destroy());
    return db;
  });
}
