// REST requests that the transcoder would read some other way than they say, refused at the edge
// with a google.rpc.Status body before any replica is asked (an Envoy with no replicas at all):
// a body on a route that takes none, which the transcoder reads into the request unchecked; a
// query parameter without a value, which it skips; a compressed body, which it reads as JSON.

import { gzipSync } from "node:zlib";
import test from "ava";
import { Code } from "../../kit/errors.js";
import { CERTS, edgeFetch } from "../helpers/credentials.js";
import { startEnvoy } from "../helpers/envoy.js";

interface Status {
  code: number;
  message: string;
  details: { reason?: string; field_violations?: { field: string }[] }[];
}

test("REST: a body where the route takes none, a valueless query parameter and a compressed body are refused", async (t) => {
  const envoy = await startEnvoy({ services: {}, tls: CERTS, waitHealthy: false });
  t.teardown(() => envoy.stop());
  const send = async (method: string, path: string, body?: Buffer | string, headers = {}) => {
    const response = await edgeFetch(`https://${envoy.address}${path}`, {
      method,
      // Node sends a GET's or a DELETE's body without content-length unless told.
      headers: {
        ...(body !== undefined && {
          "content-type": "application/json",
          "content-length": String(Buffer.byteLength(body)),
        }),
        ...headers,
      },
      ...(body !== undefined && { body }),
    });
    return { http: response.status, status: (await response.json()) as Status };
  };
  const reasonOf = ({ status }: { status: Status }) => status.details[0]?.reason;

  // The transcoder kept the body's last page_size and let `bogus` through.
  const listed = await send("GET", "/products", '{"page_size":1,"page_size":2,"bogus":true}');
  t.is(listed.http, 400);
  t.is(listed.status.code, Code.INVALID_ARGUMENT);
  t.is(reasonOf(listed), "BODY_NOT_ALLOWED");
  const deleted = await send("DELETE", "/users/usr_a", '{"user_id":"usr_b"}');
  t.is(reasonOf(deleted), "BODY_NOT_ALLOWED");
  // Without a body the request passes the edge, and finds no replica.
  t.is((await send("GET", "/products")).http, 503);

  // The transcoder skipped both: the first listed every product, in stock or not.
  for (const query of ["in_stock_only%3Dtrue", "page_size=1&foo"]) {
    const answer = await send("GET", `/products?${query}`);
    t.is(answer.http, 400, query);
    t.is(reasonOf(answer), "MALFORMED_REQUEST", query);
    const name = query === "page_size=1&foo" ? "foo" : "in_stock_only=true";
    t.deepEqual(
      answer.status.details[1]?.field_violations?.map((v) => v.field),
      [name],
      query,
    );
  }

  const body = JSON.stringify({ name: "Mug" });
  const gzipped = await send("POST", "/products", gzipSync(body), { "content-encoding": "gzip" });
  t.is(gzipped.http, 415);
  t.is(gzipped.status.code, Code.UNIMPLEMENTED);
  t.is(reasonOf(gzipped), "UNSUPPORTED_ENCODING");
  // identity is no encoding: the call goes on to the token check.
  t.is((await send("POST", "/products", body, { "content-encoding": "identity" })).http, 401);
});
