import test from "ava";
import { isBusy } from "./index.js";
import { CallerGone, NoTurn, RowTurns } from "./row-turns.js";

/** A write that runs until `finish` is called; `started` tells whether it began. */
function write() {
  let finish!: (fail?: Error) => void;
  const done = new Promise<void>((resolve, reject) => {
    finish = (fail) => (fail ? reject(fail) : resolve());
  });
  const state = {
    started: false,
    finish,
    run: () => {
      state.started = true;
      return done;
    },
  };
  return state;
}

const turn = () => new Promise((resolve) => setImmediate(resolve));

test("two writes per row at a time, the rest in arrival order; other rows go on", async (t) => {
  const turns = new RowTurns(2, 60_000);
  const writes = Array.from({ length: 4 }, write);
  const running = writes.map((w) => turns.run(["hot"], w.run));
  const other = write();
  const elsewhere = turns.run(["cold"], other.run);
  await turn();
  t.deepEqual(
    writes.map((w) => w.started),
    [true, true, false, false],
  );
  t.true(other.started);

  writes[1]?.finish();
  await turn();
  t.deepEqual(
    writes.map((w) => w.started),
    [true, true, true, false],
  );
  // A failed write gives its turn back too.
  writes[0]?.finish(new Error("refused"));
  await t.throwsAsync(running[0] as Promise<void>, { message: "refused" });
  await turn();
  t.true(writes[3]?.started);

  for (const w of [...writes, other]) w.finish();
  await Promise.all([...running.slice(1), elsewhere]);
});

test("a write on several rows takes its turns in order, so two never wait for each other", async (t) => {
  const turns = new RowTurns(1, 60_000);
  const ab = write();
  const ba = write();
  const first = turns.run(["a", "b"], ab.run);
  const second = turns.run(["b", "a"], ba.run);
  await turn();
  t.true(ab.started);
  t.false(ba.started);
  ab.finish();
  await first;
  await turn();
  t.true(ba.started);
  ba.finish();
  await second;
});

test("a write that waits past maxWaitMs fails busy, and leaves the queue", async (t) => {
  const turns = new RowTurns(1, 50);
  const holder = write();
  const holding = turns.run(["hot"], holder.run);
  const late = write();
  const error = await t.throwsAsync(turns.run(["hot"], late.run), { instanceOf: NoTurn });
  t.true(isBusy(error), "UNAVAILABLE, so the caller may retry");
  t.false(late.started);

  holder.finish();
  await holding;
  // The row is free again: the next write starts at once.
  const next = write();
  const running = turns.run(["hot"], next.run);
  await turn();
  t.true(next.started);
  next.finish();
  await running;
});

test("a write whose caller goes away while it waits leaves the queue and never runs", async (t) => {
  const turns = new RowTurns(1, 60_000);
  let asked = 0;
  const holder = write();
  const holding = turns.run(["hot"], holder.run, () => {
    asked++;
    return new AbortController().signal;
  });
  t.is(asked, 0, "a write with a free turn never asks for its caller's signal");

  const caller = new AbortController();
  const gone = write();
  const leaving = turns.run(["hot"], gone.run, () => caller.signal);
  const next = write();
  const running = turns.run(["hot"], next.run);
  caller.abort();
  await t.throwsAsync(leaving, { instanceOf: CallerGone });

  holder.finish();
  await holding;
  await turn();
  t.false(gone.started);
  t.true(next.started, "the turn passed to the write behind it");
  // A caller already gone does not queue at all.
  await t.throwsAsync(
    turns.run(["hot"], write().run, () => caller.signal),
    { instanceOf: CallerGone },
  );
  next.finish();
  await running;
});
