import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { registry } from "../services/registry.js";
import { SERVICE_SETTINGS, SETTINGS, unknownSettings } from "./settings.js";

const services = registry.names;

test("a SHOP_ variable that names no setting is reported, with the setting two edits away", (t) => {
  const environment = {
    SHOP_PORT: "1",
    SHOP_PORTT: "1",
    SHOP_RECONCLIE_MS: "100",
    SHOP_ORDER_PORTS: "1,2",
    SHOP_PAYMENT_ADDR: "127.0.0.1:1",
    SHOP_SOMETHING_ELSE: "x",
    PATH: "/bin",
    OTEL_SERVICE_NAME: "x",
  };
  t.deepEqual(unknownSettings(environment, services, registry.settings), [
    { name: "SHOP_PAYMENT_ADDR" },
    { name: "SHOP_PORTT", closest: "SHOP_PORT" },
    { name: "SHOP_RECONCLIE_MS", closest: "SHOP_RECONCILE_MS" },
    { name: "SHOP_SOMETHING_ELSE" },
  ]);
  // A fork's service brings its own SHOP_<NAME>_* settings, and the ones its module names.
  const payment = { SHOP_PAYMENT_ADDR: "x", SHOP_PAYMENT_RETRY_MS: "1" };
  t.deepEqual(unknownSettings(payment, [...services, "payment"], ["SHOP_PAYMENT_RETRY_MS"]), []);
  t.deepEqual(unknownSettings(payment, [...services, "payment"]), [
    { name: "SHOP_PAYMENT_RETRY_MS" },
  ]);
});

/** Every SHOP_ name in `text`, less the prefixes code builds names from (`SHOP_TLS_`). */
const namesIn = (text: string) =>
  [...text.matchAll(/\bSHOP_[A-Z0-9_]*[A-Z0-9]\b/g)].map(([name]) => name);

test("the list holds every setting README's table names, and no other", (t) => {
  const readme = readFileSync("README.md", "utf8");
  const start = readme.indexOf("| `SHOP_HOST`");
  const rows = readme.slice(start, readme.indexOf("\n\n", start)).split("\n");
  const named = rows.flatMap((row) =>
    namesIn((row.split(" | ")[0] ?? "").replaceAll("<NAME>", "NAME")),
  );
  t.deepEqual(
    [...new Set(named)].sort(),
    [
      ...SETTINGS,
      ...registry.settings,
      ...SERVICE_SETTINGS.map((setting) => `SHOP_NAME_${setting}`),
    ].sort(),
  );
});

test("every SHOP_ name the code and the deployment files read is a setting", (t) => {
  const known = new Set([
    ...SETTINGS,
    ...registry.settings,
    ...services.flatMap((service) =>
      SERVICE_SETTINGS.map((setting) => `SHOP_${service.toUpperCase()}_${setting}`),
    ),
  ]);
  const files = [
    "Dockerfile",
    "deploy/compose.yaml",
    ...["kit", "services", "scripts", "bench", "deploy"].flatMap((dir) =>
      readdirSync(dir, { recursive: true, encoding: "utf8" })
        .filter((file) => /\.(ts|ya?ml|sh)$/.test(file) && !file.endsWith(".test.ts"))
        .map((file) => path.join(dir, file))
        .filter((file) => file !== "kit/settings.ts"),
    ),
  ];
  const unknown = files.flatMap((file) =>
    namesIn(readFileSync(file, "utf8"))
      .filter((name) => !known.has(name))
      .map((name) => `${file}: ${name}`),
  );
  t.deepEqual(unknown, []);
});

test("each service names in its module the settings of its own that its folder reads", (t) => {
  for (const { name, module } of registry.services) {
    const dir = path.join("services", name);
    const read = readdirSync(dir, { recursive: true, encoding: "utf8" })
      .filter((file) => file.endsWith(".ts") && !/\.test\.ts$|test-setup\.ts$/.test(file))
      .flatMap((file) => namesIn(readFileSync(path.join(dir, file), "utf8")))
      .filter((setting) => !SETTINGS.includes(setting));
    t.deepEqual([...new Set(read)].sort(), [...(module.settings ?? [])].sort(), name);
  }
});
