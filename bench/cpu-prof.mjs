// `node --cpu-prof` for processes we cannot add flags to: Node refuses --cpu-prof in
// NODE_OPTIONS, but accepts `--import`. bench/run.ts --cpu-prof DIR starts the services with
//
//   NODE_OPTIONS="--import <repo>/bench/cpu-prof.mjs"  BENCH_CPU_PROF_DIR=DIR
//
// and each process writes DIR/<name>-<pid>.cpuprofile on exit (graceful shutdown or
// process.exit); <name> is the service, echo or kit-echo.
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import path from "node:path";

const dir = process.env.BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  // 1 ms sampling, like --cpu-prof-interval's default.
  session.post("Profiler.enable");
  session.post("Profiler.setSamplingInterval", { interval: 1000 });
  session.post("Profiler.start");
  // A session on the main thread answers synchronously, so this works inside 'exit'.
  process.once("exit", () => {
    session.post("Profiler.stop", (error, result) => {
      if (error) return;
      // A service replica is services/main.ts <service>; an echo server is bench/echo/<x>.ts.
      const script = process.argv[1] ?? "node";
      const folder = path.basename(path.dirname(script));
      const label =
        folder === "services"
          ? (process.argv[2] ?? folder)
          : path
              .basename(script)
              .replace(/\.[cm]?[jt]s$/, "")
              .replace("server", folder);
      const name = `${label}-${process.pid}.cpuprofile`;
      writeFileSync(path.join(dir, name), JSON.stringify(result.profile));
    });
  });
}
