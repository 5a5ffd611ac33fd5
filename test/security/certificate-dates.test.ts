// A service's own certificate outside its validity stops the start, naming the file and the date:
// every peer would refuse it. openssl 3.0 cannot issue an expired certificate, so the clock moves
// instead of the certificate. A running service exports both expiries for the alerts.
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import test from "ava";
import { startService } from "../../kit/runtime/index.js";
import { checkValidity, SecurityError } from "../../kit/security/security.js";
import { identityFiles } from "../../scripts/lib/credentials.js";
import { createProductService } from "../../services/product/service.js";
import { CERTS, meshSecurity } from "../helpers/credentials.js";

const DAY = 86_400_000;

test("a certificate past its validity, or not yet in it, is refused with the date; one within it is not", async (t) => {
  const file = identityFiles(CERTS, "product").cert;
  const cert = new X509Certificate(await readFile(file));
  t.notThrows(() => checkValidity(cert, file));
  const expired = t.throws(() => checkValidity(cert, file, Date.parse(cert.validTo) + DAY), {
    instanceOf: SecurityError,
  });
  t.is(
    expired?.message,
    `SHOP_TLS_CERT_FILE: the certificate in ${file} expired on ${cert.validTo}: issue it again`,
  );
  const early = t.throws(() => checkValidity(cert, file, Date.parse(cert.validFrom) - DAY), {
    instanceOf: SecurityError,
  });
  t.regex(early?.message ?? "", /is not valid before .*: check this host's clock$/);
});

test("a service over mutual TLS exports when its certificate and its CA expire", async (t) => {
  const product = await startService(createProductService(), {
    host: "127.0.0.1",
    port: 0,
    database: ":memory:",
    logLevel: "silent",
    shutdownGraceMs: 2_000,
    metrics: { port: 0 },
    security: meshSecurity("product"),
  });
  t.teardown(() => product.stop());
  const scrape = await (await fetch(`http://${product.metricsEndpoint?.address}/metrics`)).text();
  const expiry = (certificate: string) =>
    Number(
      scrape.match(
        new RegExp(
          `^shop_tls_certificate_expiry_timestamp_seconds{certificate="${certificate}"} (\\S+)$`,
          "m",
        ),
      )?.[1],
    );
  const files = identityFiles(CERTS, "product");
  const notAfter = async (file: string) =>
    Date.parse(new X509Certificate(await readFile(file)).validTo) / 1000;
  t.is(expiry("identity"), await notAfter(files.cert));
  t.is(expiry("ca"), await notAfter(files.ca));
});
