// Where a service's database is, as the variables an operator sets say.
import test from "ava";
import { databaseLocation } from "./config.js";

/** Runs `read` with `variables` set (undefined: unset) in this process, then puts them back. */
function withEnv<T>(variables: Record<string, string | undefined>, read: () => T): T {
  const saved = Object.fromEntries(Object.keys(variables).map((name) => [name, process.env[name]]));
  const assign = (values: Record<string, string | undefined>) => {
    for (const [name, value] of Object.entries(values)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
  assign(variables);
  try {
    return read();
  } finally {
    assign(saved);
  }
}

const URL_A = "postgres://shop@db-a/shop";

test("a service's own database URL wins, and the shared one is read only without it", (t) => {
  const own = { SHOP_ORDER_DATABASE_URL: URL_A };
  t.is(
    withEnv({ ...own, SHOP_DATABASE_URL: "" }, () => databaseLocation("order")),
    URL_A,
  );
  t.is(
    withEnv({ ...own, SHOP_DATABASE_URL: "mysql://x" }, () => databaseLocation("order")),
    URL_A,
  );
  t.throws(
    () =>
      withEnv({ SHOP_ORDER_DATABASE_URL: undefined, SHOP_DATABASE_URL: "" }, () =>
        databaseLocation("order"),
      ),
    { message: /SHOP_DATABASE_URL is set but empty/ },
  );
  t.throws(
    () =>
      withEnv({ SHOP_ORDER_DATABASE_URL: "", SHOP_DATABASE_URL: URL_A }, () =>
        databaseLocation("order"),
      ),
    { message: /SHOP_ORDER_DATABASE_URL is set but empty/ },
  );
});
