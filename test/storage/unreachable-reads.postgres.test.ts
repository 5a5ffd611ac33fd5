// The reads' own pool (openReads) meets a server that takes connections but never answers, as a
// hung or frozen PostgreSQL does: each read is UNAVAILABLE, to be tried again, as writes are.
// node-postgres's connect timeout says only "timeout expired", which no status mapping knows,
// and it reaches whichever read waits next for the pool.
import { setTimeout as sleep } from "node:timers/promises";
import test from "ava";
import { openDatabase, openReads, sqlOf } from "../../kit/db/index.js";
import { Code } from "../../kit/errors.js";
import { toServiceError } from "../../kit/middleware/status.js";
import { callContext } from "../helpers/context.js";
import { pgProxy } from "../helpers/pg-proxy.js";
import { freshDatabase, opening, useStorage } from "../helpers/storage.js";

useStorage("postgres");

test("reads whose connection is never answered are UNAVAILABLE DATABASE_BUSY, every one waiting", async (t) => {
  const proxy = await pgProxy(t, await freshDatabase());
  const db = opening(await openDatabase(proxy.url, [], { schema: "product", poolMax: 4 }));
  t.teardown(() => db.destroy());
  proxy.holdNew();
  const reads = openReads(db);
  t.not(reads, db, "a pool of its own");
  t.teardown(() => reads.destroy());
  const ctx = callContext("shop.product.v1.ProductService", "GetProduct");
  // Staggered, so that one read's failed connection reaches the next one waiting.
  const answers = await Promise.all(
    Array.from({ length: 4 }, async (_, i) => {
      await sleep(i * 300);
      const error = await sqlOf(reads)
        .query("SELECT 1", [])
        .then(
          () => undefined,
          (failure: unknown) => failure,
        );
      const answer = toServiceError(error, ctx, false);
      return `${Code[answer.code]} ${answer.details.reason}`;
    }),
  );
  t.deepEqual(answers, Array(4).fill("UNAVAILABLE DATABASE_BUSY"));
});
