// How many tests of a file run in-process fleets (startFleet) at once. Ava starts a file's tests together,
// and their services share the file's one event loop: eighteen fleets at once, beside another
// file on two cores, stretched each turn of the loop to 300 ms, and a CreateOrder (some twenty
// turns across three services and the database) passed its 5 s dependency deadline. The other
// tests wait for a turn; ava's timeout counts from the last test that finished, not from a start.
import type { ExecutionContext } from "ava";

const AT_ONCE = 6;

let running = 0;
const waiting: (() => void)[] = [];
const holding = new WeakSet<object>();

/** Waits until `t` may start a fleet; its turn ends after its last teardown. Idempotent. */
export async function takeTurn(t: Pick<ExecutionContext, "teardown">): Promise<void> {
  if (holding.has(t)) return;
  holding.add(t);
  if (running < AT_ONCE) running++;
  else await new Promise<void>((resolve) => waiting.push(resolve));
  // Registered before any service's teardown, so it runs after all of them.
  t.teardown(() => {
    const next = waiting.shift();
    if (next) next();
    else running--;
  });
}
