// A service's background tasks (Implementation.background), as the kit runs them for every
// service: repeated, a failed run logged and counted without stopping the next, and a run in
// progress finished before the service's database closes.
import test from "ava";
import type { AnyServiceModule } from "../kit/service.js";
import { userService } from "../services/user/service.js";
import { eventually } from "./helpers/eventually.js";
import { captureLogger, start } from "./helpers/fleet.js";
import { sampleValue } from "./helpers/metrics.js";

test("a background task runs again after a failed run, and stopping waits for the run in progress", async (t) => {
  const { logger, lines } = captureLogger("user", "warn");
  let runs = 0;
  let inProgress: PromiseWithResolvers<void> | undefined;
  let finished = 0;
  const module: AnyServiceModule = {
    ...userService,
    implement: (env) => ({
      ...userService.implement(env),
      background: [
        {
          name: "flaky",
          everyMs: 10,
          async run() {
            runs++;
            if (runs === 1) throw new Error("the first run fails");
            if (runs === 3) {
              inProgress = Promise.withResolvers<void>();
              await inProgress.promise;
            }
            finished++;
          },
        },
      ],
    }),
  };
  const service = await start(t, module, { logger });
  await eventually("the third run to begin", () => inProgress);

  const failed = lines.find((line) => line.task === "flaky");
  t.is(failed?.msg, "background task failed; will run again");
  t.is((failed?.err as { message?: string } | undefined)?.message, "the first run fails");
  const text = await service.metrics.text();
  t.is(sampleValue(text, "shop_background_failures_total", { task: "flaky" }), 1);
  t.is(sampleValue(text, "shop_background_runs_total", { task: "flaky" }), 2);

  let stopped = false;
  const stopping = service.stop().then(() => {
    stopped = true;
  });
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.false(stopped, "the service waits for the run in progress");
  t.is(runs, 3, "no run begins while one is in progress, nor once the service stops");
  inProgress?.resolve();
  await stopping;
  t.is(finished, 2);
  await new Promise((resolve) => setTimeout(resolve, 50));
  t.is(runs, 3, "no run after the service stopped");
});
