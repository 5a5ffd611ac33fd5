// Which PostgreSQL URLs the production profile starts with: TLS to a server off its host, or
// plaintext the URL asks for, or a server on its own host. Read as node-postgres reads them.
import test from "ava";
import { checkDatabaseTransport } from "./security.js";

const check = (url: string, profile: "production" | "development" = "production") =>
  checkDatabaseTransport(profile, url, "SHOP_DATABASE_URL");

/** Runs `work` with PGHOST and PGSSLMODE as given (undefined: unset), then puts them back. */
function withPgEnv(values: { PGHOST?: string; PGSSLMODE?: string }, work: () => void) {
  const saved = { PGHOST: process.env.PGHOST, PGSSLMODE: process.env.PGSSLMODE };
  const assign = (next: Record<string, string | undefined>) => {
    for (const [name, value] of Object.entries(next)) {
      if (value === undefined) delete process.env[name];
      else process.env[name] = value;
    }
  };
  assign({ PGHOST: undefined, PGSSLMODE: undefined, ...values });
  try {
    work();
  } finally {
    assign(saved);
  }
}

test("a server off this host without TLS is refused in production only", (t) => {
  withPgEnv({}, () => {
    const url = "postgres://shop:secret@db.example.com:5432/shop";
    t.throws(() => check(url), { message: /db\.example\.com over TLS only.*SHOP_DATABASE_URL/ });
    t.throws(() => check("postgresql://10.0.0.7/shop?application_name=x"));
    t.notThrows(() => check(url, "development"));
  });
});

test("what the driver reads, not what the URL seems to say: an empty or repeated host, PGHOST", (t) => {
  withPgEnv({}, () => {
    // The driver ignores an empty host= and takes the last of two.
    t.throws(() => check("postgres://db.example.com/shop?host="));
    t.throws(() => check("postgres://db.example.com/shop?host=localhost&host=db.example.com"));
  });
  withPgEnv({ PGHOST: "db.example.com" }, () => {
    t.throws(() => check("postgres:///shop"), { message: /db\.example\.com/ });
  });
  // A PGSSLMODE the driver does not know (a typo, say) turns nothing on.
  for (const mode of ["allow", "verify_full"]) {
    withPgEnv({ PGSSLMODE: mode }, () => {
      t.throws(() => check("postgres://db.example.com/shop"), undefined, mode);
    });
  }
});

test("TLS by the URL or PGSSLMODE, or plaintext asked for, is taken", (t) => {
  withPgEnv({}, () => {
    for (const query of ["sslmode=require", "ssl=true", "sslmode=no-verify", "sslmode=disable"]) {
      t.notThrows(() => check(`postgres://shop@db.example.com/shop?${query}`), query);
    }
  });
  for (const mode of ["verify-full", "disable"]) {
    withPgEnv({ PGSSLMODE: mode }, () => {
      t.notThrows(() => check("postgres://shop@db.example.com/shop"), mode);
    });
  }
});

test("a server on this host, by loopback or a Unix socket, is taken as it is", (t) => {
  withPgEnv({}, () => {
    for (const url of [
      "postgres://shop@127.0.0.1:5432/shop",
      "postgres://shop@LOCALHOST/shop",
      "postgres://shop@[::1]/shop",
      "postgres://shop@[::ffff:127.0.0.1]/shop",
      "postgres:///shop",
      "postgres:///shop?host=/var/run/postgresql",
      "postgres://shop@%2Fvar%2Frun%2Fpostgresql/shop",
    ]) {
      t.notThrows(() => check(url), url);
    }
  });
});
