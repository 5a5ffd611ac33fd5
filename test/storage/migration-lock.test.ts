// A replica that starts while another process holds its schema's migration lock says so, naming
// the holder, instead of waiting without a word until a startup probe kills it.
import test from "ava";
import { connectDatabase, openDatabase } from "../../kit/db/index.js";
import { registry } from "../../services/registry.js";
import { eventually } from "../helpers/eventually.js";
import { captureLogger } from "../helpers/fleet.js";
import { freshDatabase, opening, useStorage } from "../helpers/storage.js";

useStorage("postgres");

test("a replica waiting for the migration lock logs who holds it, then migrates once it is free", async (t) => {
  const url = await freshDatabase();
  const holder = opening(
    connectDatabase(url, { schema: "user", poolMax: 1, applicationName: "shopmesh user migrate" }),
  );
  t.teardown(() => holder.destroy());
  // One connection (pool of one) holds the lock, as a replica migrating (or stalled) does.
  await holder.raw("select pg_advisory_lock(hashtext('shopmesh migrate user'))");
  const { logger, lines } = captureLogger("user");
  const opened = openDatabase(url, registry.get("user").migrations, { schema: "user", logger });
  const warning = await eventually("a warning about the lock", () =>
    lines.find((line) => /migration lock/.test(String(line.msg))),
  );
  t.regex(String(warning.msg), /schema "user".*shopmesh user migrate/);
  await holder.raw("select pg_advisory_unlock(hashtext('shopmesh migrate user'))");
  const db = opening(await opened);
  t.teardown(() => db.destroy());
  t.deepEqual((await db.raw("select count(*)::int as n from users")).rows, [{ n: 0 }]);
});
