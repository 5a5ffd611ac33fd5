// A write rpc on an SQLite file answers once what it committed is on disk (SHOP_SQLITE_SYNC,
// kit/db/wal-sync.ts): a crashed host cannot lose a write its caller was told about. Reads wait
// for nothing, and calls made at once share a sync.
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import test, { type ExecutionContext } from "ava";
import type { ServerConfig } from "../../kit/config.js";
import { addProduct } from "../../scripts/lib/seed.js";
import { createProductService } from "../../services/product/service.js";
import { clientsFor, start, type TestService } from "../helpers/fleet.js";

async function catalog(t: ExecutionContext, config: Partial<ServerConfig> = {}) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-durable-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const service = await start(t, createProductService(), {
    database: path.join(dir, "product.sqlite"),
    config,
  });
  const { products } = clientsFor(t, { product: service.server.address });
  return { service, products };
}

/** `shop_sqlite_wal_syncs_total`, or undefined when the service has no such counter. */
async function syncs(service: TestService): Promise<number | undefined> {
  const text = await service.metrics.text();
  const value = /^shop_sqlite_wal_syncs_total (\d+)$/m.exec(text)?.[1];
  return value === undefined ? undefined : Number(value);
}

test("a write is synced before it answers, a read is not", async (t) => {
  const { service, products } = await catalog(t);
  const mug = await addProduct(products, { name: "mug" });
  const afterWrite = (await syncs(service)) ?? 0;
  t.true(afterWrite >= 1, `${afterWrite} syncs`);
  for (let i = 0; i < 5; i++) await products.getProduct({ productId: mug.productId });
  t.is(await syncs(service), afterWrite);
});

test("writes made at once share syncs", async (t) => {
  const { service, products } = await catalog(t);
  await addProduct(products, { name: "first" });
  const before = (await syncs(service)) ?? 0;
  await Promise.all(Array.from({ length: 40 }, (_, i) => addProduct(products, { name: `p${i}` })));
  const made = ((await syncs(service)) ?? 0) - before;
  t.log(`40 creates at once: ${made} syncs`);
  t.true(made >= 1 && made < 40, `${made} syncs`);
});

test("SHOP_SQLITE_SYNC=at-checkpoint leaves syncing to SQLite", async (t) => {
  const { service, products } = await catalog(t, { sqliteSync: "at-checkpoint" });
  await addProduct(products, { name: "mug" });
  t.is(await syncs(service), undefined);
});
