// Which PostgreSQL URLs the production profile starts with: TLS to a server off its host, or
// plaintext the URL asks for, or a server on its own host.
import test from "ava";
import { checkDatabaseTransport, type SecurityConfig } from "./security.js";

const production = { profile: "production" } as SecurityConfig;
const check = (url: string, config = production) =>
  checkDatabaseTransport(config, url, "SHOP_DATABASE_URL");

test("a server off this host, the URL silent on TLS, is refused in production only", (t) => {
  const url = "postgres://shop:secret@db.example.com:5432/shop";
  t.throws(() => check(url), { message: /db\.example\.com over TLS only.*SHOP_DATABASE_URL/ });
  t.throws(() => check("postgresql://10.0.0.7/shop?application_name=x"));
  t.notThrows(() => check(url, { profile: "development" } as SecurityConfig));
});

test("a URL that sets TLS, or plaintext on purpose, is taken", (t) => {
  for (const query of [
    "sslmode=verify-full&sslrootcert=/etc/db/ca.pem",
    "sslmode=require",
    "sslrootcert=/etc/db/ca.pem",
    "ssl=true",
    "sslmode=disable",
  ]) {
    t.notThrows(() => check(`postgres://shop@db.example.com/shop?${query}`), query);
  }
});

test("PGSSLMODE decides for a URL that says nothing", (t) => {
  const saved = process.env.PGSSLMODE;
  process.env.PGSSLMODE = "verify-full";
  try {
    t.notThrows(() => check("postgres://shop@db.example.com/shop"));
  } finally {
    if (saved === undefined) delete process.env.PGSSLMODE;
    else process.env.PGSSLMODE = saved;
  }
});

test("a server on this host, by loopback or a Unix socket, is taken as it is", (t) => {
  for (const url of [
    "postgres://shop@127.0.0.1:5432/shop",
    "postgres://shop@localhost/shop",
    "postgres://shop@[::1]/shop",
    "postgres:///shop?host=/var/run/postgresql",
    "postgres://shop@%2Fvar%2Frun%2Fpostgresql/shop",
  ]) {
    t.notThrows(() => check(url), url);
  }
});
