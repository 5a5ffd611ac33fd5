// The orders store as concurrent calls meet it: a read never sees half an order. It runs again on
// the other storages through services/handlers.*.test.ts.
import test from "ava";
import { openDatabase } from "../../kit/db/index.js";
import { newId } from "../../kit/ids.js";
import { createLogger } from "../../kit/observability/logger.js";
import { freshDatabase, opening } from "../../test/helpers/storage.js";
import { migrations } from "./migrations/index.js";
import { OrderStore } from "./store.js";

const logger = createLogger("order", "silent");

test("an order discarded while its idempotency key is looked up is found whole or not at all", async (t) => {
  const db = opening(
    await openDatabase(await freshDatabase(), migrations, { schema: "order", logger }),
  );
  t.teardown(() => db.destroy());
  const store = new OrderStore({ db: db, reads: db });
  for (let round = 0; round < 5; round++) {
    const orderId = newId("ord");
    const key = `discarded-${round}`;
    await store.insert({
      orderId,
      userId: "usr_alice",
      idempotencyKey: key,
      reservationId: `order:${orderId}`,
      lines: [{ productId: "prd_mug", quantity: 2 }],
    });
    // The lookup reads the order, then its lines; the discard runs between the two.
    const [found, discarded] = await Promise.all([
      store.findByIdempotencyKey("usr_alice", key),
      store.discard(orderId),
    ]);
    t.true(discarded);
    if (found) t.is(found.order.lines.length, 1, "the order's lines come with it");
  }
});
