// A PostgreSQL address that takes the connection but is no server: one that closes it at once (a
// server restarting, a pooler with no backend), and one that never answers (a hung host). No
// statement was sent in either, so a call is UNAVAILABLE, to be tried again: never INTERNAL, and
// never ABORTED (OUTCOME_UNKNOWN), which tells its caller a write may have been kept.
import net from "node:net";
import test from "ava";
import { connectDatabase, sqlOf } from "../../kit/db/index.js";
import { Code } from "../../kit/errors.js";
import { toServiceError } from "../../kit/middleware/status.js";
import type { Logger } from "../../kit/observability/logger.js";
import { callContext } from "../helpers/context.js";
import { captureLogger } from "../helpers/fleet.js";

async function listener(
  t: import("ava").ExecutionContext,
  onSocket: (socket: net.Socket) => void,
  logger?: Logger,
) {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    sockets.add(socket);
    onSocket(socket);
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => {
    for (const socket of sockets) socket.destroy();
    server.close();
  });
  const { port } = server.address() as net.AddressInfo;
  const db = connectDatabase(`postgres://shop:secret@127.0.0.1:${port}/shop`, {
    schema: "product",
    poolMax: 2,
    ...(logger && { logger }),
  });
  t.teardown(() => db.destroy());
  return db;
}

/** The code and reason a call would answer with after `attempt` fails, for a write. */
async function answerOf(attempt: Promise<unknown>, rpc = "CreateProduct") {
  const ctx = callContext("shop.product.v1.ProductService", rpc);
  const error = await attempt.then(
    () => undefined,
    (failure: unknown) => failure,
  );
  const answer = toServiceError(error, ctx, false);
  return `${Code[answer.code]} ${answer.details.reason}`;
}

test("an address that closes each connection at once: UNAVAILABLE, nothing was sent", async (t) => {
  const db = await listener(t, (socket) => socket.destroy());
  t.is(await answerOf(db("products").insert({ product_id: "prd_1" })), "UNAVAILABLE DATABASE_BUSY");
  t.is(await answerOf(sqlOf(db).query("SELECT 1", [])), "UNAVAILABLE DATABASE_BUSY");
});

test("an address that never answers: UNAVAILABLE once the connection times out, for every call waiting", async (t) => {
  const db = await listener(t, () => {});
  // Spread over the pool's two connections and its wait for one: each gives up its own way.
  const answers = await Promise.all(
    Array.from({ length: 4 }, (_, i) =>
      new Promise((resolve) => setTimeout(resolve, i * 300)).then(() =>
        answerOf(sqlOf(db).transaction((trx) => trx.query("SELECT 1", []))),
      ),
    ),
  );
  t.deepEqual(answers, Array(4).fill("UNAVAILABLE DATABASE_BUSY"));
});

test("a database that refuses every connection is logged once per kind of failure, not per call", async (t) => {
  const { logger, lines } = captureLogger("product", "warn");
  const db = await listener(t, (socket) => socket.destroy(), logger);
  for (let i = 0; i < 50; i++)
    await sqlOf(db)
      .query("SELECT 1", [])
      .catch(() => {});
  const failures = lines.filter((line) => /Acquire connection error/.test(String(line.msg)));
  t.is(failures.length, 1, String(failures[0]?.msg));
  t.false(String(failures[0]?.msg).includes("\n"), "one line, without knex's stack");
});
