// A server middleware that holds one rpc's calls in their handler until the test opens the gate,
// counting those it holds: for a test that needs a call in flight at a moment of its choosing.
//
//   const gate = rpcGate(t, "GetProduct");     // opened by t.teardown too
//   start(t, module, { middleware: [gate.middleware] });
//   await until("the call is held", () => gate.waiting() === 1);
//   gate.open();
import type { ExecutionContext } from "ava";
import type { ServerMiddleware } from "../../kit/middleware/index.js";

export interface RpcGate {
  middleware: ServerMiddleware;
  /** Lets every held call, and every later one, on to its handler. */
  open(): void;
  /** The calls held now. */
  waiting(): number;
}

export function rpcGate(t: ExecutionContext, rpc: string): RpcGate {
  let open = () => {};
  const opened = new Promise<void>((resolve) => {
    open = resolve;
  });
  t.teardown(() => open());
  let waiting = 0;
  return {
    middleware: {
      name: `${rpc}-gate`,
      wrap: (method, next) =>
        method.rpc !== rpc
          ? next
          : async (request, ctx) => {
              waiting++;
              await opened;
              waiting--;
              return next(request, ctx);
            },
    },
    open: () => open(),
    waiting: () => waiting,
  };
}
