// The edge, faithful to the contract, against `npm run mesh` (real Envoy, real replicas): reflection
// through Envoy, REST errors as google.rpc.Status JSON, the access log's status per protocol, the
// Connect protocol with buf curl, and health by service name.
import http2 from "node:http2";
import { request as httpsRequest } from "node:https";
import path from "node:path";
import { credentials, Metadata } from "@grpc/grpc-js";
import test from "ava";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { CreateOrderRequest, WatchOrderRequest } from "../../gen/ts/shop/order/v1/order.js";
import { GetProductRequest, GetProductResponse } from "../../gen/ts/shop/product/v1/product.js";
import { Code, decodeStatus } from "../../kit/errors.js";
import { descriptorFiles } from "../../kit/reflection.js";
import { registry } from "../../services/registry.js";
import { openRawClient } from "../helpers/bad-input.js";
import {
  ADMIN_TOKEN,
  CA,
  CERTS,
  edgeFetch,
  edgeTransport,
  tokenFor,
} from "../helpers/credentials.js";
import { exec } from "../helpers/exec.js";
import { type AccessLogLine, newProduct, newUser, tag, useMesh } from "../helpers/front-door.js";
import { grpcFrame } from "../helpers/grpc-frame.js";
import { EDGE_TLS, grpcurl, type Json } from "../helpers/grpcurl.js";
import { type ReflectionVersion, reflect } from "../helpers/reflection.js";

const mesh = useMesh();
const PUBLIC = registry.publicServices.slice().sort();
const INFRA = [
  "grpc.health.v1.Health",
  "grpc.reflection.v1.ServerReflection",
  "grpc.reflection.v1alpha.ServerReflection",
];
const channel = () =>
  credentials.createSsl(CA, null, null, { checkServerIdentity: () => undefined });
const url = (rest: string) => `https://${mesh.front()}${rest}`;
const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };

/** The code and ErrorInfo of a gRPC or gRPC-Web reply's headers (or trailers). */
const ofHeaders = (headers: Record<string, unknown>) => {
  const { reason, domain } = decodeStatus(detailsOf(headers["grpc-status-details-bin"]));
  return { code: Number(headers["grpc-status"]), reason, domain };
};

/** grpc-status-details-bin as a header carries it, as the metadata decodeStatus reads. */
const detailsOf = (value: unknown) => {
  const metadata = new Metadata();
  if (typeof value === "string")
    metadata.set("grpc-status-details-bin", Buffer.from(value, "base64"));
  return metadata;
};

/** One gRPC call as raw HTTP/2, for headers no client library sends: its headers and trailers. */
const rawGrpc = (
  session: http2.ClientHttp2Session,
  path: string,
  body: Uint8Array,
  headers: http2.OutgoingHttpHeaders,
) =>
  new Promise<Record<string, unknown>>((resolve, reject) => {
    const stream = session.request({
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    });
    const seen: Record<string, unknown> = {};
    stream.on("response", (received) => Object.assign(seen, received));
    stream.on("trailers", (received) => Object.assign(seen, received));
    stream.on("data", () => {});
    stream.on("end", () => resolve(seen));
    stream.on("error", reject);
    stream.end(body);
  });

let healthy: Promise<void> | undefined;
/** Every replica healthy in Envoy's eyes, once per file. */
const ready = () => {
  healthy ??= mesh.waitHealthy(["user", "product", "order"]);
  return healthy;
};

/** The access log line of the request sent with x-request-id `id`. */
const logged = async (id: string): Promise<AccessLogLine & Record<string, unknown>> =>
  (await mesh.loggedRequests(id, 1))[0] as AccessLogLine & Record<string, unknown>;

// ---------------------------------------------------------------------------------------------
// Reflection through Envoy

for (const version of ["v1", "v1alpha"] satisfies ReflectionVersion[]) {
  test.serial(
    `${version} through Envoy: the list is the public API; files are exact`,
    async (t) => {
      await ready();
      const files = descriptorFiles();
      const names = [...files.keys()].filter((name) => name !== "shop/product/v1/inventory.proto");
      const answers = await reflect(
        mesh.front(),
        version,
        [
          { list_services: "" },
          ...names.map((name) => ({ file_by_filename: name })),
          { file_by_filename: "shop/product/v1/inventory.proto" },
        ],
        undefined,
        channel(),
      );
      const [listed, ...rest] = answers;
      t.deepEqual(listed?.services?.slice().sort(), [...PUBLIC, ...INFRA].sort());
      names.forEach((name, i) => {
        const answer = rest[i];
        t.is(answer?.files?.[0]?.name, name, answer?.error?.message);
        for (const [k, raw] of (answer?.raw ?? []).entries()) {
          const sent = answer?.files?.[k]?.name as string;
          t.true(Buffer.from(files.get(sent) as Uint8Array).equals(raw), `${sent} differs`);
        }
      });
      t.is(rest.at(-1)?.error?.code, 5, "the internal API is not described at the edge");
    },
  );
}

test.serial(
  "grpcurl through Envoy: list is exactly the public API, describe as the descriptor set",
  async (t) => {
    await ready();
    const listed = await grpcurl([mesh.front(), "list"], undefined, EDGE_TLS);
    t.is(listed.code, 0, listed.stderr);
    t.deepEqual(listed.stdout.trim().split("\n").sort(), [...PUBLIC, ...INFRA].sort());
    const described = await grpcurl(
      [mesh.front(), "describe", "shop.product.v1.Product"],
      undefined,
      EDGE_TLS,
    );
    t.regex(described.stdout, /OUTPUT_ONLY/);
  },
);

// ---------------------------------------------------------------------------------------------
// REST errors

const GRPC_HEADERS = [
  "grpc-status",
  "grpc-message",
  "grpc-encoding",
  "grpc-accept-encoding",
  "grpc-status-details-bin",
];

/** A REST call: its status, JSON body and headers; never a grpc-* header. */
async function rest(
  t: import("ava").ExecutionContext,
  method: string,
  rest: string,
  body?: string,
  headers: Record<string, string> = admin,
) {
  const id = tag("rest");
  const response = await edgeFetch(url(rest), {
    method,
    headers: {
      ...(body && { "content-type": "application/json" }),
      ...headers,
      "x-request-id": id,
    },
    ...(body && { body }),
  });
  for (const name of GRPC_HEADERS)
    t.false(response.headers.has(name), `${method} ${rest}: ${name}`);
  t.is(response.headers.get("content-type"), "application/json", `${method} ${rest}`);
  return { status: response.status, json: (await response.json()) as Json, id };
}

/** The ErrorInfo of a body or query the transcoder could not read. */
const malformed = {
  "@type": "type.googleapis.com/google.rpc.ErrorInfo",
  reason: "MALFORMED_REQUEST",
  domain: "shopmesh.edge",
};

test.serial("REST: success replies carry no grpc-* headers", async (t) => {
  await ready();
  const { status, json } = await rest(t, "GET", "/products?page_size=1");
  t.is(status, 200);
  t.true(Array.isArray(json.products));
});

test.serial(
  "REST: an unknown query parameter is refused with INVALID_ARGUMENT, naming it in a BadRequest",
  async (t) => {
    await ready();
    for (const [query, field] of [
      ["/products?foo=bar", "foo"],
      ["/products?page_size=1&colour=red", "colour"],
      ["/users/usr_x?x=1", "x"],
      ["/products?access_token=abc", "access_token"],
      ["/orders?filter.state=1", "filter.state"],
    ] as const) {
      const { status, json } = await rest(t, "GET", query);
      t.is(status, 400, query);
      t.is(json.code, 3, query);
      t.is(json.message, `unknown query parameter ${field}`, query);
      t.like(json.details[0], { reason: "UNKNOWN_FIELD", metadata: { field } }, query);
      t.deepEqual(
        json.details[1].field_violations,
        [{ field, description: "no such field" }],
        query,
      );
    }
    // A known field passes, by either of its names.
    for (const query of ["/products?pageSize=1", "/products?page_size=1&in_stock_only=true"]) {
      t.is((await rest(t, "GET", query)).status, 200, query);
    }
  },
);

test.serial(
  "REST: a query value of the wrong type, bad JSON and a NUL in the path are INVALID_ARGUMENT, as JSON",
  async (t) => {
    await ready();
    const badValue = await rest(t, "GET", "/products?page_size=abc");
    t.deepEqual([badValue.status, badValue.json.code], [400, 3]);
    t.regex(badValue.json.message, /page_size/);
    t.like(badValue.json.details[0], malformed);
    // Bad JSON is bad JSON even after a key the request does not have.
    for (const body of ["{bad", '{"bogus": 1, bad', '{"user_id": "x"} trailing']) {
      const badJson = await rest(t, "POST", "/orders", body);
      t.deepEqual([badJson.status, badJson.json.code], [400, 3], body);
      t.like(badJson.json.details[0], malformed, body);
    }
    // JSON nested past what protobuf's parser takes is refused as such, however deep.
    for (const depth of [101, 20_000]) {
      const deep = `{"user_id": "x", "lines": ${"[".repeat(depth)}${"]".repeat(depth)}}`;
      const refused = await rest(t, "POST", "/orders", deep);
      t.deepEqual([refused.status, refused.json.code], [400, 3], `${depth}`);
      t.like(refused.json.details[0], malformed, `${depth}`);
      t.regex(refused.json.message, /nests objects and arrays more than 100 deep/, `${depth}`);
    }
    // A path Envoy will not normalize is refused before any filter, and still answered as JSON.
    const nul = await rest(t, "GET", "/products/a%00b");
    t.deepEqual([nul.status, nul.json.code], [400, 3]);
    t.like(nul.json.details[0], malformed);
  },
);

test.serial(
  "REST: unknown body fields are refused with INVALID_ARGUMENT, nothing written",
  async (t) => {
    await ready();
    const email = `${tag("unknown")}@example.com`;
    // With a trailing slash too, which the transcoder serves as the same path.
    for (const path of ["/users", "/users/"]) {
      const top = await rest(
        t,
        "POST",
        path,
        JSON.stringify({ email, display_name: "X", bogus: 1 }),
      );
      t.deepEqual([top.status, top.json.code], [400, 3], path);
      t.like(top.json.details[0], { reason: "UNKNOWN_FIELD", metadata: { field: "bogus" } });
      t.like(top.json.details[1], {
        "@type": "type.googleapis.com/google.rpc.BadRequest",
        field_violations: [{ field: "bogus" }],
      });
    }
    // Labelled Connect or gRPC, a REST route's body is still transcoded, so still checked.
    for (const label of [
      { "connect-protocol-version": "1", "content-type": "text/plain" } as Record<string, string>,
      { "content-type": "application/grpc; charset=utf-8" },
    ]) {
      const body = JSON.stringify({ email, display_name: "X", bogus: 1 });
      const labelled = await rest(t, "POST", "/users", body, { ...admin, ...label });
      t.deepEqual([labelled.status, labelled.json.code], [400, 3], JSON.stringify(label));
      t.like(labelled.json.details[0], { reason: "UNKNOWN_FIELD" });
    }
    // The same body without the stray field creates the user: the first wrote nothing.
    const created = await rest(t, "POST", "/users", JSON.stringify({ email, displayName: "X" }));
    t.is(created.status, 200, JSON.stringify(created.json));

    const user = await newUser(mesh.clients());
    const token = await tokenFor(user.userId);
    const nested = await rest(
      t,
      "POST",
      "/orders",
      JSON.stringify({
        user_id: user.userId,
        lines: [{ product_id: "prd_x", quantity: 1, colour: "red" }],
      }),
      { authorization: `Bearer ${token}` },
    );
    t.deepEqual([nested.status, nested.json.code], [400, 3]);
    t.is(nested.json.details[0].metadata.field, "lines[0].colour");
  },
);

test.serial(
  "REST: a field set twice in a body, by either of its names, is refused, nothing written",
  async (t) => {
    await ready();
    const email = `${tag("twice")}@example.com`;
    const twice = (answer: { status: number; json: Json }, field: string) => {
      t.deepEqual([answer.status, answer.json.code], [400, 3], JSON.stringify(answer.json));
      t.like(answer.json.details[0], { reason: "DUPLICATE_FIELD", metadata: { field } });
      t.like(answer.json.details[1], { field_violations: [{ field }] });
    };
    // JSON.stringify cannot write a key twice: these bodies are written out.
    twice(
      await rest(
        t,
        "POST",
        "/users",
        `{"email":"${email}","email":"x${email}","display_name":"X"}`,
      ),
      "email",
    );
    twice(
      await rest(t, "POST", "/users", `{"email":"${email}","display_name":"X","displayName":"Y"}`),
      "displayName",
    );
    const user = await newUser(mesh.clients());
    const token = await tokenFor(user.userId);
    const order = (lines: string) =>
      rest(t, "POST", "/orders", `{"user_id":"${user.userId}","lines":[${lines}]}`, {
        authorization: `Bearer ${token}`,
      });
    twice(await order('{"product_id":"prd_x","quantity":1,"quantity":2}'), "lines[0].quantity");
    // The same key in two objects is no repeat: the order gets as far as the product service.
    const two = await order(
      '{"product_id":"prd_x","quantity":1},{"product_id":"prd_y","quantity":1}',
    );
    t.deepEqual([two.status, two.json.details[0].reason], [404, "PRODUCT_NOT_FOUND"]);
    // The first bodies wrote nothing: the email is still free.
    const created = await rest(t, "POST", "/users", JSON.stringify({ email, displayName: "X" }));
    t.is(created.status, 200, JSON.stringify(created.json));
  },
);

test.serial(
  "REST: a query parameter for a field the path or the body sets, or given twice, is refused, nothing changed",
  async (t) => {
    await ready();
    const [c, d] = [await newUser(mesh.clients()), await newUser(mesh.clients())];
    const refused = (answer: { status: number; json: Json }, field: string) => {
      t.deepEqual([answer.status, answer.json.code], [400, 3], JSON.stringify(answer.json));
      t.like(answer.json.details[0], {
        reason: "QUERY_PARAMETER_NOT_ALLOWED",
        domain: "shopmesh.edge",
        metadata: { field },
      });
    };
    refused(await rest(t, "DELETE", `/users/${c.userId}?user_id=${d.userId}`), "user_id");
    // A trailing slash is the same path to the transcoder, and to this check.
    refused(await rest(t, "DELETE", `/users/${c.userId}/?user_id=${d.userId}`), "user_id");
    refused(await rest(t, "GET", `/users/${c.userId}?userId=${d.userId}`), "userId");
    // Labelled Connect or gRPC, a REST route's request is still transcoded, so still checked.
    for (const label of [
      { "connect-protocol-version": "1" } as Record<string, string>,
      { "content-type": "application/grpc; charset=utf-8" },
      // Not one of the four types Envoy's gRPC-Web filter takes: the transcoder serves it.
      { "content-type": "application/grpc-web; charset=utf-8" },
    ]) {
      const labelled = { ...admin, ...label };
      refused(
        await rest(t, "DELETE", `/users/${c.userId}?user_id=${d.userId}`, undefined, labelled),
        "user_id",
      );
    }
    const rename = JSON.stringify({ display_name: "Renamed" });
    refused(
      await rest(
        t,
        "PATCH",
        `/users/${c.userId}?update_mask=display_name&user.user_id=${d.userId}`,
        rename,
      ),
      "user.user_id",
    );
    // CancelOrder's body is the whole request: no query parameter at all.
    refused(await rest(t, "POST", "/orders/ord_x:cancel?order%5Fid=ord_y", "{}"), "order_id");
    for (const user of [c, d]) {
      const read = await rest(t, "GET", `/users/${user.userId}`);
      t.is(read.status, 200);
      t.is(read.json.user.display_name, user.displayName);
    }
    // A field given twice, by either of its names, would keep only the last: refused.
    const twice = (answer: { status: number; json: Json }, field: string) => {
      t.deepEqual([answer.status, answer.json.code], [400, 3], JSON.stringify(answer.json));
      t.like(answer.json.details[0], { reason: "DUPLICATE_FIELD", metadata: { field } });
    };
    twice(await rest(t, "GET", "/products?page_size=1&pageSize=3"), "pageSize");
    const mug = await newProduct(mesh.clients(), 1);
    const both = JSON.stringify({ name: "Renamed", description: "Redescribed" });
    twice(
      await rest(
        t,
        "PATCH",
        `/products/${mug.productId}?update_mask=name&update_mask=description`,
        both,
        admin,
      ),
      "update_mask",
    );
    const kept = await rest(t, "GET", `/products/${mug.productId}`);
    t.deepEqual(
      [kept.json.product.name, kept.json.product.description],
      [mug.name, mug.description],
    );
    // A query parameter for a field neither sets still goes through.
    const renamed = await rest(t, "PATCH", `/users/${c.userId}?update_mask=display_name`, rename);
    t.deepEqual([renamed.status, renamed.json.user.display_name], [200, "Renamed"]);
  },
);

test.serial(
  "REST: service errors keep their google.rpc.Status; unknown paths are NOT_FOUND",
  async (t) => {
    await ready();
    const missing = await rest(t, "GET", "/products/prd_nope");
    t.deepEqual([missing.status, missing.json.code], [404, 5]);
    t.is(missing.json.details[0].reason, "PRODUCT_NOT_FOUND");
    const nowhere = await rest(t, "GET", "/nowhere");
    t.deepEqual([nowhere.status, nowhere.json.code], [404, 5]);
    t.like(nowhere.json.details[0], { reason: "ROUTE_NOT_FOUND", domain: "shopmesh.edge" });
    const anonymous = await rest(t, "GET", "/orders", undefined, {});
    t.deepEqual([anonymous.status, anonymous.json.code], [401, 16]);
  },
);

/** One native gRPC call over HTTP/1.1 (chunked), as no gRPC library sends it: what came back. */
const grpcOverHttp1 = (path: string, body: Uint8Array) =>
  new Promise<{
    status: number;
    headers: Record<string, unknown>;
    trailers: Record<string, unknown>;
  }>((resolve, reject) => {
    const request = httpsRequest(
      url(path),
      {
        method: "POST",
        ca: CA,
        headers: { "content-type": "application/grpc", te: "trailers", ...admin },
      },
      (response) => {
        response.on("data", () => {});
        response.on("error", reject);
        response.on("end", () =>
          resolve({
            status: response.statusCode ?? 0,
            headers: response.headers,
            trailers: response.trailers,
          }),
        );
      },
    );
    request.on("error", reject);
    request.end(body);
  });

test.serial("native gRPC over HTTP/1.1 still tells its caller the status", async (t) => {
  await ready();
  const product = await newProduct(mesh.clients(), 1);
  const get = (productId: string) =>
    grpcOverHttp1(
      "/shop.product.v1.ProductService/GetProduct",
      grpcFrame(GetProductRequest.encode({ productId }).finish()),
    );
  // A reply with a message ends with trailers, which HTTP/1.1 carries after the last chunk.
  const found = await get(product.productId);
  t.is(found.status, 200);
  t.is(found.trailers["grpc-status"], "0", JSON.stringify(found));
  // A refusal is trailers-only: its status is in the headers.
  const missing = await get("prd_nope");
  t.is(missing.headers["grpc-status"] ?? missing.trailers["grpc-status"], "5");
});

// ---------------------------------------------------------------------------------------------
// The access log states the status the caller got

test.serial("the access log states each caller's protocol, method and status", async (t) => {
  await ready();
  const c = mesh.clients();
  const product = await newProduct(c, 3);
  const sent: [string, Promise<unknown>][] = [];
  const send = (what: string, call: (id: string) => Promise<unknown>) => {
    const id = tag(what);
    sent.push([id, call(id).catch(() => undefined)]);
    return id;
  };
  const withHeader = (id: string) => ["-H", `x-request-id: ${id}`];
  const buf = (protocol: string, id: string, method: string, body: object) =>
    exec(path.join("node_modules", ".bin", "buf"), [
      "curl",
      ...["--protocol", protocol, "--cacert", path.join(CERTS, "ca.crt")],
      ...["-H", `x-request-id: ${id}`, "-H", `authorization: Bearer ${ADMIN_TOKEN}`],
      ...["-d", JSON.stringify(body), url(`/${method}`)],
    ]);
  const get = "shop.product.v1.ProductService/GetProduct";
  const ids = {
    grpcOk: send("grpc-ok", (id) =>
      grpcurl(
        [
          ...withHeader(id),
          "-d",
          JSON.stringify({ product_id: product.productId }),
          mesh.front(),
          get,
        ],
        undefined,
        EDGE_TLS,
      ),
    ),
    grpcMissing: send("grpc-missing", (id) =>
      grpcurl(
        [...withHeader(id), "-d", '{"product_id":"prd_nope"}', mesh.front(), get],
        undefined,
        EDGE_TLS,
      ),
    ),
    webOk: send("web-ok", (id) => buf("grpcweb", id, get, { product_id: product.productId })),
    webMissing: send("web-missing", (id) => buf("grpcweb", id, get, { product_id: "prd_nope" })),
    connectOk: send("connect-ok", (id) =>
      buf("connect", id, get, { product_id: product.productId }),
    ),
    connectMissing: send("connect-missing", (id) =>
      buf("connect", id, get, { product_id: "prd_nope" }),
    ),
    restOk: send("rest-ok", (id) =>
      edgeFetch(url(`/products/${product.productId}`), { headers: { "x-request-id": id } }),
    ),
    restMissing: send("rest-missing", (id) =>
      edgeFetch(url("/products/prd_nope"), { headers: { "x-request-id": id } }),
    ),
    // A query is caller data, and where a careless client puts its token: the log keeps the path.
    restQuery: send("rest-query", (id) =>
      edgeFetch(url("/products?page_size=1&access_token=secret-in-query"), {
        headers: { "x-request-id": id },
      }),
    ),
    restBadJson: send("rest-bad-json", (id) =>
      edgeFetch(url("/orders"), {
        method: "POST",
        headers: { ...admin, "x-request-id": id },
        body: "{bad",
      }),
    ),
  };
  await Promise.all(sent.map(([, done]) => done));
  const expect: Record<keyof typeof ids, [string, string, number, number]> = {
    grpcOk: ["grpc", "POST", 200, 0],
    grpcMissing: ["grpc", "POST", 200, 5],
    webOk: ["grpc-web", "POST", 200, 0],
    webMissing: ["grpc-web", "POST", 200, 5],
    connectOk: ["connect", "POST", 200, 0],
    connectMissing: ["connect", "POST", 404, 5],
    restOk: ["rest", "GET", 200, 0],
    restMissing: ["rest", "GET", 404, 5],
    restQuery: ["rest", "GET", 400, 3],
    restBadJson: ["rest", "POST", 400, 3],
  };
  for (const [name, id] of Object.entries(ids)) {
    const line = await logged(id);
    t.deepEqual(
      [line.api, line.method, line.response_code, line.grpc_status],
      expect[name as keyof typeof ids],
      name,
    );
  }
  // One line per request (grpcurl asks reflection first, with the same id): native gRPC has a
  // format of its own, and no request is logged in both.
  const lines = mesh.accessLog();
  t.is((await logged(ids.restQuery)).path, "/products");
  t.false(JSON.stringify(lines).includes("secret-in-query"));
  for (const [name, id] of Object.entries(ids)) {
    const paths = lines.filter((line) => line.x_request_id === id).map((line) => line.path);
    t.is(new Set(paths).size, paths.length, `${name}: ${paths.join(", ")}`);
  }
  c.close();
});

// ---------------------------------------------------------------------------------------------
// Connect

const bufCurl = (
  protocol: string,
  method: string,
  body: object,
  token = ADMIN_TOKEN,
  flags: string[] = [],
) =>
  exec(path.join("node_modules", ".bin", "buf"), [
    "curl",
    ...["--protocol", protocol, "--cacert", path.join(CERTS, "ca.crt"), ...flags],
    ...["-H", `authorization: Bearer ${token}`, "-d", JSON.stringify(body)],
    url(`/${method}`),
  ]);

test.serial(
  "Connect: buf curl --protocol connect calls, and reads errors with their details",
  async (t) => {
    await ready();
    const c = mesh.clients();
    const [user, product] = await Promise.all([newUser(c), newProduct(c, 2)]);
    const got = await bufCurl("connect", "shop.product.v1.ProductService/GetProduct", {
      product_id: product.productId,
    });
    t.is(got.code, 0, got.stderr);
    t.is(JSON.parse(got.stdout).product.productId, product.productId);

    const token = await tokenFor(user.userId);
    const order = await bufCurl(
      "connect",
      "shop.order.v1.OrderService/CreateOrder",
      {
        user_id: user.userId,
        lines: [{ product_id: product.productId, quantity: 1 }],
        request_id: tag("req"),
      },
      token,
    );
    t.is(order.code, 0, order.stderr);
    t.is(JSON.parse(order.stdout).order.state, "ORDER_STATE_CONFIRMED");

    // Short stock: FAILED_PRECONDITION with its PreconditionFailure, the message readable.
    const short = await bufCurl(
      "connect",
      "shop.order.v1.OrderService/CreateOrder",
      { user_id: user.userId, lines: [{ product_id: product.productId, quantity: 5 }] },
      token,
    );
    t.not(short.code, 0);
    const error = JSON.parse(short.stdout || short.stderr.slice(short.stderr.indexOf("{")));
    t.is(error.code, "failed_precondition");
    t.notRegex(error.message, /%20/);
    t.true(
      error.details.some(
        (detail: { type: string }) => detail.type === "google.rpc.PreconditionFailure",
      ),
      JSON.stringify(error),
    );

    // The server-streaming rpc works over Connect too.
    const watched = await exec(path.join("node_modules", ".bin", "buf"), [
      "curl",
      ...["--protocol", "connect", "--cacert", path.join(CERTS, "ca.crt")],
      ...["-H", `authorization: Bearer ${token}`, "--timeout", "2s"],
      ...["-d", JSON.stringify({ order_id: JSON.parse(order.stdout).order.orderId })],
      url("/shop.order.v1.OrderService/WatchOrder"),
    ]);
    t.regex(watched.stdout, /ORDER_STATE_CONFIRMED/);
    c.close();
  },
);

test.serial("curl reads each refusal of Envoy's own that has a request body", async (t) => {
  // HTTP/2 lets Envoy answer before the body is in; curl 7.88 then often fails (exit 92) and
  // shows nothing. Each of these answers waits for the body, so every try gets its status.
  await ready();
  const refusals = [
    { path: "/orders?user_id=someone", headers: [], status: "400" },
    { path: "/no-such-collection", headers: [], status: "404" },
    {
      path: "/shop.product.v1.ProductService/ListProducts",
      headers: ["-H", "connect-protocol-version: 1"],
      status: "415",
    },
  ];
  for (const refusal of refusals) {
    for (let i = 0; i < 10; i++) {
      const sent = await exec("curl", [
        ...["-sS", "--http2", "-o", "/dev/null", "-w", "%{http_code}"],
        ...["--cacert", path.join(CERTS, "ca.crt"), "-H", `authorization: Bearer ${ADMIN_TOKEN}`],
        ...["-H", "content-type: application/json", ...refusal.headers, "-d", "{}"],
        url(refusal.path),
      ]);
      t.is(sent.code, 0, `${refusal.path}, try ${i}: ${sent.stderr}`);
      t.is(sent.stdout, refusal.status, refusal.path);
    }
  }
});

test.serial(
  "Connect: the JSON codec is refused with 415 and its ErrorInfo, before any service",
  async (t) => {
    await ready();
    const response = await edgeFetch(url("/shop.product.v1.ProductService/ListProducts"), {
      method: "POST",
      headers: { ...admin, "content-type": "application/json", "connect-protocol-version": "1" },
      body: "{}",
    });
    t.is(response.status, 415);
    const error = (await response.json()) as {
      code: string;
      details?: { type: string; value: string }[];
    };
    t.is(error.code, "unimplemented");
    const info = error.details?.find((detail) => detail.type === "google.rpc.ErrorInfo");
    t.like(info && ErrorInfo.decode(Buffer.from(info.value, "base64")), {
      reason: "UNSUPPORTED_CODEC",
      domain: "shopmesh.edge",
    });
  },
);

test.serial(
  "Connect: Envoy's own refusals are Connect errors with their ErrorInfo, unary and streaming",
  async (t) => {
    await ready();
    const connect = async (path: string, streaming: boolean, headers: Record<string, string>) => {
      const response = await edgeFetch(url(path), {
        method: "POST",
        headers: {
          "connect-protocol-version": "1",
          "content-type": streaming ? "application/connect+proto" : "application/proto",
          ...headers,
        },
        // An empty request message, enveloped when streaming.
        body: streaming ? Buffer.alloc(5) : Buffer.alloc(0),
      });
      const body = Buffer.from(await response.arrayBuffer());
      // A stream's error is its end-of-stream message: flags 0x02, length, {"error": …}.
      const error = (
        streaming
          ? (JSON.parse(body.subarray(5).toString()) as { error: Json }).error
          : JSON.parse(body.toString())
      ) as { code: string; details: { type: string; value: string }[] };
      const info = error.details.find((detail) => detail.type === "google.rpc.ErrorInfo");
      return {
        status: response.status,
        type: response.headers.get("content-type"),
        code: error.code,
        ...(streaming && { flags: body[0] }),
        info: info && ErrorInfo.decode(Buffer.from(info.value, "base64")),
      };
    };
    const user = await newUser(mesh.clients());
    const token = { authorization: `Bearer ${await tokenFor(user.userId)}` };
    const cases = [
      ["/shop.user.v1.UserService/ListUsers", false, {}, 401, "unauthenticated", "TOKEN_MISSING"],
      ["/shop.order.v1.OrderService/WatchOrder", true, {}, 200, "unauthenticated", "TOKEN_MISSING"],
      [
        "/shop.user.v1.UserService/ListUsers",
        false,
        token,
        403,
        "permission_denied",
        "ADMIN_REQUIRED",
      ],
      [
        "/shop.product.v1.InventoryService/ReserveStock",
        false,
        admin,
        501,
        "unimplemented",
        "UNKNOWN_METHOD",
      ],
      // The edge's own checks of a stream, answered as a stream too: a client that got 415 or
      // 400 read only that, as UNKNOWN or INTERNAL.
      [
        "/shop.order.v1.OrderService/WatchOrder",
        true,
        { ...token, "content-type": "application/connect+json" },
        200,
        "unimplemented",
        "UNSUPPORTED_CODEC",
      ],
      [
        "/shop.order.v1.OrderService/WatchOrder",
        true,
        { ...token, "connect-timeout-ms": "soon" },
        200,
        "invalid_argument",
        "MALFORMED_REQUEST",
      ],
    ] as const;
    for (const [path, streaming, headers, status, code, reason] of cases) {
      t.like(
        await connect(path, streaming, headers),
        {
          status,
          type: streaming ? "application/connect+proto" : "application/json",
          code,
          ...(streaming && { flags: 2 }),
          info: { reason, domain: "shopmesh.edge" },
        },
        `${path} (${reason})`,
      );
    }
  },
);

test.serial(
  "a deadline that runs out behind the edge is DEADLINE_EXCEEDED with its ErrorInfo, in every protocol",
  async (t) => {
    await ready();
    const c = mesh.clients();
    const [user, product] = await Promise.all([newUser(c), newProduct(c, 10)]);
    // The user's own token: the order is theirs to place, so the call gets as far as its deadline.
    const token = { authorization: `Bearer ${await tokenFor(user.userId)}` };
    // CreateOrder takes three calls and two writes: its reply never comes within a millisecond.
    const request = CreateOrderRequest.encode({
      userId: user.userId,
      lines: [{ productId: product.productId, quantity: 1, unitPrice: undefined }],
      requestId: "",
    }).finish();
    const enveloped = Buffer.concat([Buffer.from([0, 0, 0, 0, request.length]), request]);
    const get = "/shop.order.v1.OrderService/CreateOrder";
    const expected = { code: 4, reason: "DEADLINE_EXCEEDED" };
    // Envoy forwards the deadline and keeps no timer of its own on it: the service ends the call.
    // (A call without one is cut at the edge after 15 s, with the same code, in its own domain.)
    const DOMAINS = ["shopmesh.edge", "shop.order.v1"];

    // gRPC: a deadline of a microsecond, which runs out before the order service answers.
    const session = http2.connect(`https://${mesh.front()}`, { ca: CA });
    t.teardown(() => session.close());
    const grpc = ofHeaders(
      await rawGrpc(session, get, enveloped, { "grpc-timeout": "1u", ...token }),
    );
    t.like(grpc, expected, "gRPC");
    t.true(DOMAINS.includes(grpc.domain ?? ""), `gRPC: ${grpc.domain}`);

    // gRPC-Web: a trailers-only 200, as a gRPC-Web client reads the code from a status other
    // than 200.
    const web = await edgeFetch(url(get), {
      method: "POST",
      headers: { ...token, "content-type": "application/grpc-web+proto", "grpc-timeout": "1u" },
      body: enveloped,
    });
    t.is(web.status, 200);
    const grpcWeb = ofHeaders(Object.fromEntries(web.headers));
    t.like(grpcWeb, expected, "gRPC-Web");
    t.true(DOMAINS.includes(grpcWeb.domain ?? ""), `gRPC-Web: ${grpcWeb.domain}`);

    // Connect: its error JSON.
    const connect = await edgeFetch(url(get), {
      method: "POST",
      headers: {
        ...token,
        "content-type": "application/proto",
        "connect-protocol-version": "1",
        "connect-timeout-ms": "0",
      },
      body: Buffer.from(request),
    });
    // Connect's 504 for it, not the 408 that lets a browser send the call again.
    t.is(connect.status, 504);
    const error = (await connect.json()) as { code: string; details: { value: string }[] };
    t.is(error.code, "deadline_exceeded");
    const info = ErrorInfo.decode(Buffer.from(error.details[0]?.value ?? "", "base64"));
    t.is(info.reason, "DEADLINE_EXCEEDED");
    t.true(DOMAINS.includes(info.domain), `Connect: ${info.domain}`);
  },
);

test.serial(
  "gRPC-Web text sent in pieces shorter than 4 characters reaches the service whole",
  async (t) => {
    await ready();
    const { productId } = await newProduct(mesh.clients(), 10);
    const text = grpcFrame(GetProductRequest.encode({ productId }).finish()).toString("base64");
    const session = http2.connect(`https://${mesh.front()}`, { ca: CA });
    t.teardown(() => session.close());
    // Behind a route's retry policy, Envoy's gRPC-Web filter passed each short piece on again
    // with what it had decoded so far: the service read two messages, or a mangled one.
    for (const size of [3, 1]) {
      const request = session.request({
        ":method": "POST",
        ":path": "/shop.product.v1.ProductService/GetProduct",
        "content-type": "application/grpc-web-text",
      });
      const chunks: Buffer[] = [];
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      const ended = new Promise((resolve) => request.on("end", resolve));
      for (let at = 0; at < text.length; at += size) {
        request.write(text.slice(at, at + size));
        await new Promise((resolve) => setTimeout(resolve, 5));
      }
      request.end();
      await ended;
      // Binary: a reply is text only for a caller that accepts it so.
      const reply = Buffer.concat(chunks);
      // A message frame with the product, then the trailers frame.
      const product = GetProductResponse.decode(reply.subarray(5, 5 + reply.readUInt32BE(1)));
      t.is(product.product?.productId, productId, `pieces of ${size}`);
      t.regex(reply.toString("latin1"), /grpc-status:0/, `pieces of ${size}`);
    }
  },
);

test.serial(
  "a deadline that runs out as the reply leaves ends with a status, never a reset stream",
  async (t) => {
    await ready();
    const { productId } = await newProduct(mesh.clients(), 10);
    const request = grpcFrame(GetProductRequest.encode({ productId }).finish());
    const session = http2.connect(`https://${mesh.front()}`, { ca: CA });
    t.teardown(() => session.close());
    // Deadlines about as long as a GetProduct takes: some run out while its reply is on the way.
    // A timer at the edge then could only reset the stream, which clients report as INTERNAL.
    const ends: string[] = [];
    for (let i = 0; i < 60; i++) {
      const end = await rawGrpc(session, "/shop.product.v1.ProductService/GetProduct", request, {
        "grpc-timeout": `${1 + (i % 6)}m`,
      }).then(
        (headers) => `grpc-status ${headers["grpc-status"]}`,
        (error: Error) => error.message,
      );
      ends.push(end);
    }
    const counts = Object.fromEntries(
      [...new Set(ends)].map((e) => [e, ends.filter((x) => x === e).length]),
    );
    t.log(counts);
    t.deepEqual(
      Object.keys(counts).filter((end) => end !== "grpc-status 0" && end !== "grpc-status 4"),
      [],
    );
  },
);

test.serial(
  "a gRPC or gRPC-Web call with a connect-protocol-version header is still gRPC to the edge",
  async (t) => {
    await ready();
    const { productId } = await newProduct(mesh.clients(), 10);
    const request = grpcFrame(GetProductRequest.encode({ productId }).finish());
    const get = "/shop.product.v1.ProductService/GetProduct";
    const session = http2.connect(`https://${mesh.front()}`, { ca: CA });
    t.teardown(() => session.close());
    const native = await rawGrpc(session, get, request, { "connect-protocol-version": "1" });
    t.is(native[":status"], 200);
    t.is(native["grpc-status"], "0");

    const web = await edgeFetch(url(get), {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "connect-protocol-version": "1" },
      body: request,
    });
    t.is(web.status, 200);
    const body = Buffer.from(await web.arrayBuffer());
    // Its message, then its trailers frame with the status.
    t.is(body[0], 0);
    t.regex(body.subarray(5 + body.readUInt32BE(1)).toString("latin1"), /grpc-status:0/);
  },
);

test.serial(
  "a grpc-timeout that is not one is INVALID_ARGUMENT with details, in every protocol, as at a service",
  async (t) => {
    await ready();
    const get = "/shop.product.v1.ProductService/GetProduct";
    const request = grpcFrame(Buffer.from([0x0a, 0x08, ...Buffer.from("prd_none")]));
    const expected = { code: 3, reason: "MALFORMED_REQUEST", domain: "shopmesh.edge" };
    // The values kit/transport/grpc-timeout.ts refuses at a service, and the router would have ignored.
    const session = http2.connect(`https://${mesh.front()}`, { ca: CA });
    t.teardown(() => session.close());
    for (const timeout of ["soon", "1x", "123456789S", "-1S", "5S junk"]) {
      const id = tag("timeout");
      const answer = await rawGrpc(session, get, request, {
        "grpc-timeout": timeout,
        "x-request-id": id,
      });
      t.like(ofHeaders(answer), expected, `gRPC, grpc-timeout ${timeout}`);
      t.like(await logged(id), { grpc_status: 3, upstream_host: null }, `logged, ${timeout}`);
    }

    // gRPC-Web: a trailers-only 200.
    const web = await edgeFetch(url(get), {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "grpc-timeout": "1x" },
      body: request,
    });
    t.is(web.status, 200);
    t.like(ofHeaders(Object.fromEntries(web.headers)), expected, "gRPC-Web");

    // REST: a 400 with a google.rpc.Status body.
    const reply = await edgeFetch(url("/products/prd_none"), { headers: { "grpc-timeout": "1x" } });
    t.is(reply.status, 400);
    const body = (await reply.json()) as { code: number; details: { reason: string }[] };
    t.is(body.code, 3);
    t.is(body.details[0]?.reason, "MALFORMED_REQUEST");

    // A timeout that is one still reaches the service.
    const ok = await edgeFetch(url(get), {
      method: "POST",
      headers: { "content-type": "application/grpc-web+proto", "grpc-timeout": "5S" },
      body: request,
    });
    t.like(ofHeaders(Object.fromEntries(ok.headers)), { code: 5, domain: "shop.product.v1" });
  },
);

test.serial(
  "gRPC-Web: a text body that is not base64 is INVALID_ARGUMENT with details",
  async (t) => {
    await ready();
    const reply = await edgeFetch(url("/shop.product.v1.ProductService/GetProduct"), {
      method: "POST",
      headers: { ...admin, "content-type": "application/grpc-web-text" },
      body: "not base64 at all!",
    });
    t.is(reply.status, 200, "trailers-only: a gRPC-Web client reads the code from the headers");
    t.like(ofHeaders(Object.fromEntries(reply.headers)), {
      code: 3,
      reason: "MALFORMED_REQUEST",
      domain: "shopmesh.edge",
    });
  },
);

test.serial(
  "Connect: a service's error at the end of a stream is readable, with its details",
  async (t) => {
    await ready();
    const message = WatchOrderRequest.encode({ orderId: "ord_nope" }).finish();
    const response = await edgeFetch(url("/shop.order.v1.OrderService/WatchOrder"), {
      method: "POST",
      headers: {
        ...admin,
        "connect-protocol-version": "1",
        "content-type": "application/connect+proto",
      },
      body: grpcFrame(message),
    });
    t.is(response.status, 200);
    const body = Buffer.from(await response.arrayBuffer());
    t.is(body[0], 2, "the only message ends the stream");
    t.is(body.readUInt32BE(1), body.length - 5);
    const { error } = JSON.parse(body.subarray(5).toString()) as {
      error: { code: string; message: string; details: { type: string; value: string }[] };
    };
    t.is(error.code, "not_found");
    t.regex(error.message, /ord_nope/);
    t.notRegex(error.message, /%20/);
    const info = error.details.find((detail) => detail.type === "google.rpc.ErrorInfo");
    t.like(info && ErrorInfo.decode(Buffer.from(info.value, "base64")), {
      reason: "ORDER_NOT_FOUND",
      domain: "shop.order.v1",
    });
  },
);

// ---------------------------------------------------------------------------------------------
// Health by service name

test.serial(
  "Health/Check through Envoy answers for every public service, over every protocol",
  async (t) => {
    await ready();
    for (const service of ["", ...PUBLIC]) {
      for (const protocol of ["grpc", "grpcweb", "connect"]) {
        const result = await bufCurl(protocol, "grpc.health.v1.Health/Check", { service });
        t.is(result.code, 0, `${protocol} "${service}": ${result.stderr}`);
        t.deepEqual(JSON.parse(result.stdout), { status: "SERVING" });
      }
    }
    // Each answer comes from the cluster serving the service.
    for (const service of registry.services.filter((s) => s.publicServices.length > 0)) {
      const id = tag("health");
      const result = await bufCurl(
        "grpc",
        "grpc.health.v1.Health/Check",
        {
          service: service.publicServices[0],
        },
        ADMIN_TOKEN,
        ["-H", `x-request-id: ${id}`],
      );
      t.is(result.code, 0, result.stderr);
      t.is((await logged(id)).upstream_cluster, service.name);
    }
    // The internal API and unknown names are NOT_FOUND, as on a service's own port.
    for (const service of ["shop.product.v1.InventoryService", "shop.nope.v1.Nope"]) {
      const result = await bufCurl("grpc", "grpc.health.v1.Health/Check", { service });
      t.regex(result.stderr, /not_found/i, service);
    }
    // The name the edge routes by is the one the service reads: the last given, past fields of
    // every wire type. Routed by the first, this went to product, which serves the internal API.
    const name = (service: string) =>
      Buffer.concat([Buffer.from([0x0a, service.length]), Buffer.from(service)]);
    const raw = openRawClient(mesh.front(), 10_000, edgeTransport());
    const { error } = await raw(
      "/grpc.health.v1.Health/Check",
      Buffer.concat([
        name("shop.product.v1.ProductService"),
        Buffer.from([0x1d, 0, 0, 0, 0]), // field 3, a fixed32
        name("shop.product.v1.InventoryService"),
      ]),
    );
    t.is(Code[error?.code ?? -1], "NOT_FOUND", error?.message);
    // A group (field 5, holding a varint) is a field too: the name before it still routes.
    const grouped = await raw(
      "/grpc.health.v1.Health/Check",
      Buffer.concat([name("shop.order.v1.OrderService"), Buffer.from([0x2b, 0x08, 0x01, 0x2c])]),
    );
    t.is(grouped.error, undefined, grouped.error?.message);
    t.deepEqual(grouped.response, Buffer.from([0x08, 0x01]), "SERVING");
    // As deep as the service's decoder reads groups: one and 100 more within it.
    const nested = await raw(
      "/grpc.health.v1.Health/Check",
      Buffer.concat([
        name("shop.order.v1.OrderService"),
        Buffer.alloc(101, 0x2b),
        Buffer.alloc(101, 0x2c),
      ]),
    );
    raw.close();
    t.deepEqual(nested.response, Buffer.from([0x08, 0x01]), nested.error?.message);
  },
);
