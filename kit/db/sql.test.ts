import knex from "knex";
import { openDatabase } from "./index.js";
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

// A knex sqlOf has no path of its own for (a fork's MySQL, say) runs through knex.raw.
sqlSuite(
  "knex.raw",
  async (t) => {
    const db = knex({
      client: "sqlite3",
      connection: { filename: ":memory:" },
      useNullAsDefault: true,
      pool: { min: 1, max: 1 },
    });
    t.teardown(() => db.destroy());
    for (const migration of migrations) await migration.up(db);
    return db;
  },
  false,
);
