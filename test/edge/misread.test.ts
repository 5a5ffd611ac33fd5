// Requests that Envoy's filters would read some other way than the caller wrote them, answered at
// the edge before any replica is asked (an Envoy with no replicas at all). REST: a body on a route
// that takes none, which the transcoder reads into the request unchecked; a query parameter
// without a value, which it skips; a compressed body, which it reads as JSON; and a key written
// with JSON escapes, which it reads as the field it names; a body that gives a field the path sets
// another value, which it drops for the path's; a body in the transcoder's looser JSON; a repeated
// field whose value is not a list of items, which it reshapes. gRPC-Web in a codec other than proto,
// which the gRPC-Web filter passes on for a service to read as native gRPC.

import { gzipSync } from "node:zlib";
import { Metadata } from "@grpc/grpc-js";
import test from "ava";
import { Code, decodeStatus } from "../../kit/errors.js";
import { ADMIN_TOKEN, CERTS, edgeFetch } from "../helpers/credentials.js";
import { startEnvoy } from "../helpers/envoy.js";
import { grpcFrame } from "../helpers/grpc-frame.js";

interface Status {
  code: number;
  message: string;
  details: { reason?: string; field_violations?: { field: string }[] }[];
}

test("REST: a body where the route takes none, a valueless query parameter and a compressed body are refused; an escaped key is its field", async (t) => {
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
  // Without a body, or with an empty object, the request passes the edge and finds no replica.
  t.is((await send("GET", "/products")).http, 503);
  t.is((await send("GET", "/products", " { } ")).http, 503);
  // JSON's white space only: a vertical tab is not, and the transcoder would refuse it otherwise.
  t.is(reasonOf(await send("GET", "/products", "{\v}")), "BODY_NOT_ALLOWED");

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

  // The same field as the transcoder reads it: known, and given twice.
  const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
  t.is((await send("POST", "/products", '{"n\\u0061me":"Mug"}', admin)).http, 503);
  const twice = await send("POST", "/products", '{"name":"Mug","n\\u0061me":"Cup"}', admin);
  t.is(reasonOf(twice), "DUPLICATE_FIELD");

  // A field the path sets, named in the body with another value: the transcoder refused it under
  // the proto name and, under the JSON name, changed the record the path names without a word.
  for (const [method, path, key, other] of [
    ["PATCH", "/users/usr_a%5F1", "user_id", "usr_b"],
    ["PATCH", "/users/usr_a%5F1", "userId", "usr_b"],
    ["PATCH", "/products/prd_a", "productId", "prd_b"],
    ["POST", "/orders/ord_a:cancel", "orderId", "ord_b"],
    ["POST", "/orders/ord_a:cancel", "order_id", "ord_b"],
  ] as const) {
    const answer = await send(method, path, JSON.stringify({ [key]: other }), admin);
    t.is(answer.http, 400, `${path} ${key}`);
    t.is(answer.status.code, Code.INVALID_ARGUMENT, `${path} ${key}`);
    t.is(reasonOf(answer), "MALFORMED_REQUEST", `${path} ${key}`);
  }
  // JSON's own keys only: the transcoder also reads unquoted and single-quoted keys and trailing
  // commas, which slipped past every check above, so a body naming another order cancelled the
  // path's, and an unknown field was dropped without a word.
  for (const [path, body] of [
    ["/orders/ord_a:cancel", '{orderId:"ord_b"}'],
    ["/orders/ord_a:cancel", "{'order_id':'ord_b'}"],
    ["/products", '{name:"Mug",bogus:1}'],
    ["/products", '{"name":"Mug","bogus":1,}'],
    ["/products", '{"name":"Mug"} {"name":"Cup"}'],
  ] as const) {
    const answer = await send("POST", path, body, admin);
    t.deepEqual([answer.http, answer.status.code], [400, Code.INVALID_ARGUMENT], body);
    t.is(reasonOf(answer), "MALFORMED_REQUEST", body);
  }
  // A repeated field is a list of items: the transcoder dropped a null item, flattened a list
  // inside the list and took a lone item for a list of one, so an order could lose a line.
  const line = '{"product_id":"prd_a","quantity":1}';
  for (const [lines, field] of [
    [`[null,${line}]`, "lines[0]"],
    [`[${line},[${line}]]`, "lines[1]"],
    [line, "lines"],
    ['"prd_a"', "lines"],
  ] as const) {
    const body = `{"user_id":"usr_a","request_id":"r","lines":${lines}}`;
    const answer = await send("POST", "/orders", body, admin);
    t.deepEqual([answer.http, answer.status.code], [400, Code.INVALID_ARGUMENT], lines);
    t.is(reasonOf(answer), "MALFORMED_REQUEST", lines);
    t.deepEqual(
      answer.status.details[1]?.field_violations?.map((v) => v.field),
      [field],
      lines,
    );
  }
  // A name the caller made up is quoted within a service's bounds: the field 200 UTF-16 units,
  // the message 1,024, each ending in "…" when cut, and never half an emoji.
  for (const [path, body] of [
    [`/products?${"x".repeat(3000)}=1`, undefined],
    ["/products", `{"${"\u{1F600}".repeat(3000)}":1}`],
  ] as const) {
    const answer = await send(body ? "POST" : "GET", path, body, admin);
    t.is(reasonOf(answer), "UNKNOWN_FIELD", path);
    const [field] = answer.status.details[1]?.field_violations?.map((v) => v.field) ?? [];
    t.true(
      field !== undefined && field.length <= 200 && field.endsWith("…"),
      `${field?.length} units`,
    );
    t.true(answer.status.message.length <= 1024 && answer.status.message.endsWith("…"));
    t.false(`${field}${answer.status.message}`.includes("\ufffd"), "an emoji cut in two");
  }
  // A list, or null for none, goes on.
  for (const lines of [`[${line}, ${line}]`, "[]", "null", " null "]) {
    const body = `{"user_id":"usr_a","request_id":"r","lines":${lines}}`;
    t.is((await send("POST", "/orders", body, admin)).http, 503, lines);
  }
  // No body, or only white space, sets nothing: the call goes on.
  for (const body of ["", " \r\n"]) {
    t.is((await send("POST", "/orders/ord_a:cancel", body, admin)).http, 503, JSON.stringify(body));
  }
  // A gRPC method's path in no protocol Envoy's filters take: a service's grpc-js answered a
  // bare 415, which clients read as UNKNOWN.
  for (const headers of [
    { "content-type": "text/plain" },
    { "content-type": "application/proto" },
    { "content-type": "Application/proto", "connect-protocol-version": "1" },
    {},
  ] as Record<string, string>[]) {
    const answer = await send(
      "POST",
      "/shop.product.v1.ProductService/GetProduct",
      "\n\u0008prd_none",
      headers,
    );
    t.deepEqual(
      [answer.http, answer.status.code],
      [415, Code.UNIMPLEMENTED],
      JSON.stringify(headers),
    );
    t.is(reasonOf(answer), "UNSUPPORTED_CODEC", JSON.stringify(headers));
  }
  // The same value, in either spelling (percent-decoded, escaped), is no conflict.
  for (const key of ["user_id", "userId", "user\\u0049d"]) {
    const body = `{"${key}":"usr_a_1","display_name":"A"}`;
    t.is((await send("PATCH", "/users/usr_a%5F1?update_mask=display_name", body, admin)).http, 503);
  }
});

test("gRPC-Web in a codec other than proto is UNIMPLEMENTED, not served as native gRPC", async (t) => {
  const envoy = await startEnvoy({ services: {}, tls: CERTS, waitHealthy: false });
  t.teardown(() => envoy.stop());
  for (const kind of ["application/grpc-web+json", "application/grpc-web; charset=utf-8"]) {
    const response = await edgeFetch(
      `https://${envoy.address}/shop.product.v1.ProductService/GetProduct`,
      { method: "POST", headers: { "content-type": kind }, body: grpcFrame(new Uint8Array(0)) },
    );
    // Trailers-only, as every gRPC-Web error of the edge's.
    t.is(response.status, 200, kind);
    t.is(Number(response.headers.get("grpc-status")), Code.UNIMPLEMENTED, kind);
    const metadata = new Metadata();
    const details = response.headers.get("grpc-status-details-bin") ?? "";
    metadata.set("grpc-status-details-bin", Buffer.from(details, "base64"));
    t.like(decodeStatus(metadata), { reason: "UNSUPPORTED_CODEC", domain: "shopmesh.edge" }, kind);
  }
});
