// A service's own certificate outside its validity stops the start, naming the file and the date:
// every peer would refuse it. openssl 3.0 cannot issue an expired certificate, so the clock moves
// instead of the certificate.
import { X509Certificate } from "node:crypto";
import { readFile } from "node:fs/promises";
import test from "ava";
import { checkValidity, SecurityError } from "../../kit/security/security.js";
import { identityFiles } from "../../scripts/lib/credentials.js";
import { CERTS } from "../helpers/credentials.js";

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
