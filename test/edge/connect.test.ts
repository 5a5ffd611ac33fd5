// The Connect protocol at the edge (`npm run mesh`, real Envoy and replicas), where Envoy's
// bridge needs more than its defaults:
// - GET: Connect lets a client send an rpc as an HTTP GET only when the rpc is unary and declares
//   `idempotency_level = NO_SIDE_EFFECTS`. Any other rpc sent as a GET is refused with 405 before
//   it reaches a service, so a link, a prefetch or a cache replaying a URL never places an order.
//   A GET that gives a query parameter twice is refused too: Envoy's bridge reads the first. So is
//   any other method whose query says connect=v1, even percent-encoded: the bridge serves it as a
//   GET. Its base64 message may come padded, which the bridge would read as no message at all.
// - A unary body larger than the bridge may hold is a Connect error, RESOURCE_EXHAUSTED, never
//   bare text that Connect clients read as UNKNOWN.
import http2 from "node:http2";
import test from "ava";
import { REST_PAGE_BYTES } from "../../deploy/envoy/rest.js";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import {
  CancelOrderRequest,
  CreateOrderRequest,
  GetOrderRequest,
  WatchOrderRequest,
} from "../../gen/ts/shop/order/v1/order.js";
import {
  CreateProductRequest,
  GetProductRequest,
  ListProductsRequest,
  ListProductsResponse,
} from "../../gen/ts/shop/product/v1/product.js";
import { addProduct } from "../../scripts/lib/seed.js";
import { ADMIN_TOKEN, CA, edgeFetch, tokenFor } from "../helpers/credentials.js";
import { newProduct, newUser, tag, useMesh } from "../helpers/front-door.js";

const mesh = useMesh();

/** A Connect GET URL for `method` carrying `message` (proto, base64url), as connect-web builds it. */
const getUrl = (method: string, message: Uint8Array) =>
  `https://${mesh.front()}/${method}?connect=v1&encoding=proto&base64=1&message=${Buffer.from(message).toString("base64url")}`;

/** The ErrorInfo reason of a Connect error body's first detail. */
const reasonOf = (body: string) =>
  ErrorInfo.decode(
    Buffer.from(
      (JSON.parse(body) as { details: { value: string }[] }).details[0]?.value ?? "",
      "base64",
    ),
  ).reason;

/** A Connect error body's code and its first detail's ErrorInfo reason. */
async function connectError(response: Response): Promise<[string, string]> {
  const body = (await response.json()) as { code: string; details: { value: string }[] };
  return [body.code, ErrorInfo.decode(Buffer.from(body.details[0]?.value ?? "", "base64")).reason];
}

test.serial("Connect GET: an rpc without side effects is served", async (t) => {
  await mesh.waitHealthy(["product"]);
  const c = mesh.clients();
  const product = await newProduct(c, 3);
  c.close();
  const message = GetProductRequest.encode({ productId: product.productId }).finish();
  const response = await edgeFetch(getUrl("shop.product.v1.ProductService/GetProduct", message));
  t.is(response.status, 200);
  t.is(response.headers.get("content-type"), "application/proto");
});

test.serial(
  "Connect GET: a query parameter given twice is refused, not read one way",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const c = mesh.clients();
    const product = await newProduct(c, 3);
    c.close();
    const url = getUrl(
      "shop.product.v1.ProductService/GetProduct",
      GetProductRequest.encode({ productId: product.productId }).finish(),
    );
    const other = GetProductRequest.encode({ productId: "prd_other" }).finish();
    const response = await edgeFetch(`${url}&message=${Buffer.from(other).toString("base64url")}`);
    t.is(response.status, 400);
    t.deepEqual(await connectError(response), ["invalid_argument", "MALFORMED_REQUEST"]);
  },
);

test.serial(
  "Connect GET: a padded base64 message is read as unpadded, one in another alphabet refused",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const c = mesh.clients();
    await Promise.all([newProduct(c, 1), newProduct(c, 1)]);
    c.close();
    const path = "shop.product.v1.ProductService/ListProducts";
    // page_size 1 is two bytes, "CAE" unpadded: the bridge read "CAE=" as no message at all, and
    // answered a whole default page.
    const message = ListProductsRequest.encode(
      ListProductsRequest.fromPartial({ pageSize: 1 }),
    ).finish();
    for (const padding of ["", "=", "%3D"]) {
      const response = await edgeFetch(`${getUrl(path, message)}${padding}`);
      t.is(response.status, 200, padding);
      const page = ListProductsResponse.decode(new Uint8Array(await response.arrayBuffer()));
      t.is(page.products.length, 1, `padding "${padding}"`);
    }
    const garbled = await edgeFetch(`${getUrl(path, message)}!!`);
    t.is(garbled.status, 400);
    t.deepEqual(await connectError(garbled), ["invalid_argument", "MALFORMED_REQUEST"]);
    // Base64 that is no whole bytes (a length of 4n+1, spare bits set): the bridge read it as no
    // message at all, and answered a whole default page.
    const base = `https://${mesh.front()}/${path}?connect=v1&encoding=proto&base64=1&message=`;
    for (const text of ["CAEAA", "A", "CAF"]) {
      const response = await edgeFetch(`${base}${text}`);
      t.is(response.status, 400, text);
      t.deepEqual(await connectError(response), ["invalid_argument", "MALFORMED_REQUEST"], text);
    }
    // A body besides the URL's message: the bridge answered the body's.
    const other = ListProductsRequest.encode(
      ListProductsRequest.fromPartial({ pageSize: 2 }),
    ).finish();
    const withBody = await edgeFetch(getUrl(path, message), {
      // Node sends a GET's body without content-length unless told.
      headers: { "content-type": "application/proto", "content-length": String(other.length) },
      body: other,
    });
    t.is(withBody.status, 400);
    t.deepEqual(await connectError(withBody), ["invalid_argument", "MALFORMED_REQUEST"]);
  },
);

test.serial(
  "Connect: a unary request to a streaming rpc, and Connect with no codec, are refused with 415",
  async (t) => {
    await mesh.waitHealthy(["order", "product"]);
    // The bridge passed the stream's messages on as one broken reply, and only once it ended.
    const watch = await connectUnary(
      "shop.order.v1.OrderService/WatchOrder",
      WatchOrderRequest.encode({ orderId: "ord_none" }).finish(),
      await tokenFor("usr_none"),
    );
    t.is(watch.status, 415, watch.body);
    t.deepEqual(JSON.parse(watch.body).code, "unimplemented");
    // Served by the bridge, this skipped every Connect check.
    const bare = await connectUnary(
      "shop.product.v1.ProductService/GetProduct",
      GetProductRequest.encode({ productId: "prd_none" }).finish(),
      undefined,
      { "content-type": "application/connect" },
    );
    t.is(bare.status, 415, bare.body);
  },
);

test.serial(
  "Connect GET: an rpc with side effects, or a stream, is refused with 405 and placed nothing",
  async (t) => {
    await mesh.waitHealthy(["user", "product", "order"]);
    const c = mesh.clients();
    const [user, product] = await Promise.all([newUser(c), newProduct(c, 3)]);
    const auth = { authorization: `Bearer ${await tokenFor(user.userId)}` };
    const calls: [string, Uint8Array][] = [
      [
        "shop.order.v1.OrderService/CreateOrder",
        CreateOrderRequest.encode({
          userId: user.userId,
          lines: [{ productId: product.productId, quantity: 1, unitPrice: undefined }],
          requestId: tag("get"),
        }).finish(),
      ],
      [
        "shop.order.v1.OrderService/CancelOrder",
        CancelOrderRequest.encode({ orderId: "ord_none" }).finish(),
      ],
      [
        "shop.order.v1.OrderService/WatchOrder",
        WatchOrderRequest.encode({ orderId: "ord_none" }).finish(),
      ],
    ];
    for (const [method, message] of calls) {
      const response = await edgeFetch(getUrl(method, message), { headers: auth });
      t.is(response.status, 405, method);
      t.is(response.headers.get("allow"), "POST", method);
      const error = (await response.json()) as {
        code: string;
        details?: { type: string; value: string }[];
      };
      t.is(error.code, "unimplemented", method);
      const info = error.details?.find((detail) => detail.type === "google.rpc.ErrorInfo");
      t.like(info && ErrorInfo.decode(Buffer.from(info.value, "base64")), {
        reason: "METHOD_NOT_ALLOWED",
        domain: "shopmesh.edge",
      });
    }
    const left = await c.products.getProduct({ productId: product.productId });
    t.is(left.product?.stockQuantity, 3, "the GET CreateOrder took no stock");
    c.close();
  },
);

test.serial(
  "Connect GET: a CreateOrder URL sent as HEAD or POST, or with connect=v1 percent-encoded, is refused and placed nothing",
  async (t) => {
    await mesh.waitHealthy(["user", "product", "order"]);
    const c = mesh.clients();
    const [user, product] = await Promise.all([newUser(c), newProduct(c, 3)]);
    const auth = { authorization: `Bearer ${await tokenFor(user.userId)}` };
    const url = (variant: string) =>
      getUrl(
        "shop.order.v1.OrderService/CreateOrder",
        CreateOrderRequest.encode({
          userId: user.userId,
          lines: [{ productId: product.productId, quantity: 1, unitPrice: undefined }],
          requestId: tag(variant),
        }).finish(),
      );
    // Envoy's bridge takes each of these for a Connect GET and calls the rpc.
    const refusals: [string, string, number, string][] = [
      ["HEAD", url("head"), 400, ""],
      ["POST", url("post"), 400, "MALFORMED_REQUEST"],
      ["GET", url("key").replace("?connect=v1", "?%63onnect=v1"), 405, "METHOD_NOT_ALLOWED"],
      ["GET", url("value").replace("?connect=v1", "?connect=%76%31"), 405, "METHOD_NOT_ALLOWED"],
    ];
    for (const [method, target, status, reason] of refusals) {
      const response = await edgeFetch(target, { method, headers: auth });
      t.is(response.status, status, `${method} ${target.slice(0, 90)}`);
      if (!reason) continue;
      const error = (await response.json()) as { details?: { type: string; value: string }[] };
      const info = error.details?.find((detail) => detail.type === "google.rpc.ErrorInfo");
      t.like(info && ErrorInfo.decode(Buffer.from(info.value, "base64")), {
        reason,
        domain: "shopmesh.edge",
      });
    }
    const left = await c.products.getProduct({ productId: product.productId });
    t.is(left.product?.stockQuantity, 3, "none of them took stock");
    c.close();
  },
);

test.serial(
  "Connect: a call in JSON is refused with 415, whatever its charset or case",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const message = new TextEncoder().encode('{"product_id":"prd_none"}');
    for (const type of ["application/json; charset=utf-8", "application/JSON"]) {
      const reply = await connectUnary(
        "shop.product.v1.ProductService/GetProduct",
        message,
        undefined,
        { "content-type": type },
      );
      t.is(reply.status, 415, `${type}: ${reply.body}`);
      t.is((JSON.parse(reply.body) as { code: string }).code, "unimplemented", type);
    }
    const get = getUrl("shop.product.v1.ProductService/GetProduct", message).replace(
      "encoding=proto",
      "encoding=%6Ason",
    );
    t.is((await edgeFetch(get)).status, 415, "a GET whose encoding is json, percent-encoded");
  },
);

test.serial(
  "Connect: a connect-timeout-ms that is not up to 10 digits is refused, as a bad grpc-timeout is",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const message = GetProductRequest.encode({ productId: "prd_none" }).finish();
    for (const timeout of ["soon", "12345678901", "-5", "1.5"]) {
      const reply = await connectUnary(
        "shop.product.v1.ProductService/GetProduct",
        message,
        undefined,
        { "connect-timeout-ms": timeout },
      );
      t.is(reply.status, 400, `${timeout}: ${reply.body}`);
      const error = JSON.parse(reply.body) as {
        code: string;
        details?: { type: string; value: string }[];
      };
      t.is(error.code, "invalid_argument", timeout);
      const info = error.details?.find((detail) => detail.type === "google.rpc.ErrorInfo");
      t.like(info && ErrorInfo.decode(Buffer.from(info.value, "base64")), {
        reason: "MALFORMED_REQUEST",
      });
    }
    // A real one reaches the service, which answers for the product it does not have.
    const served = await connectUnary(
      "shop.product.v1.ProductService/GetProduct",
      message,
      undefined,
      { "connect-timeout-ms": "5000" },
    );
    t.is(served.status, 404, served.body);
  },
);

test.serial(
  "Connect: a unary error's HTTP status is the Connect protocol's, never a 408 a browser may resend",
  async (t) => {
    await mesh.waitHealthy(["user", "product", "order"]);
    const c = mesh.clients();
    const [user, product] = await Promise.all([newUser(c), newProduct(c, 1)]);
    const token = await tokenFor(user.userId);
    /** A CreateOrder of `quantity` units over Connect, with `headers`: its status and code. */
    const order = async (quantity: number, headers: Record<string, string> = {}) => {
      const reply = await connectUnary(
        "shop.order.v1.OrderService/CreateOrder",
        CreateOrderRequest.encode({
          userId: user.userId,
          lines: [{ productId: product.productId, quantity, unitPrice: undefined }],
          requestId: tag("status"),
        }).finish(),
        token,
        headers,
      );
      return { ...reply, code: (JSON.parse(reply.body) as { code: string }).code };
    };
    // The service's FAILED_PRECONDITION for short stock: 400 (was 412).
    t.like(await order(2), { status: 400, code: "failed_precondition" });
    // A deadline that passes: 504 (was 408, which invites a resend of a CreateOrder).
    t.like(await order(1, { "connect-timeout-ms": "1" }), {
      status: 504,
      code: "deadline_exceeded",
    });
    c.close();
  },
);

test.serial(
  "Connect: a method the edge does not serve is 501 UNKNOWN_METHOD, as a GET or a POST",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const token = await tokenFor("usr_unknown_method");
    const auth = { authorization: `Bearer ${token}` };
    const message = GetProductRequest.encode({ productId: "prd_none" }).finish();
    // A method a served service lacks, one of the internal API, and a service nobody has.
    for (const method of [
      "shop.product.v1.ProductService/GetProducts",
      "shop.product.v1.InventoryService/ReserveStock",
      "shop.nope.v1.NopeService/GetNope",
    ]) {
      const get = await edgeFetch(getUrl(method, message), { headers: auth });
      t.is(get.status, 501, `GET ${method}`);
      t.deepEqual(await connectError(get), ["unimplemented", "UNKNOWN_METHOD"], `GET ${method}`);
      const post = await connectUnary(method, message, token);
      t.is(post.status, 501, `POST ${method}: ${post.body}`);
      t.is(reasonOf(post.body), "UNKNOWN_METHOD", `POST ${method}`);
    }
  },
);

/** One Connect unary call over HTTP/2, as browsers make it: the status, content type and body. */
function connectUnary(
  method: string,
  message: Uint8Array,
  token: string | undefined,
  headers: Record<string, string> = {},
) {
  return new Promise<{ status: number; type: string; body: string; bytes: Buffer }>(
    (resolve, reject) => {
      const session = http2.connect(`https://${mesh.front()}`, {
        ca: CA,
        checkServerIdentity: () => undefined,
      });
      session.on("error", reject);
      const request = session.request({
        ":method": "POST",
        ":path": `/${method}`,
        "content-type": "application/proto",
        "connect-protocol-version": "1",
        ...(token && { authorization: `Bearer ${token}` }),
        ...headers,
      });
      let status = 0;
      let type = "";
      const chunks: Buffer[] = [];
      request.on("response", (headers) => {
        status = Number(headers[":status"]);
        type = String(headers["content-type"]);
      });
      request.on("data", (chunk: Buffer) => chunks.push(chunk));
      request.on("error", () => undefined);
      request.on("close", () => {
        session.close();
        const bytes = Buffer.concat(chunks);
        resolve({ status, type, body: bytes.toString(), bytes });
      });
      request.end(message);
    },
  );
}

test.serial(
  "Connect: a body too large for the bridge is RESOURCE_EXHAUSTED, as JSON, from 64 KiB on",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const create = (description: string) =>
      CreateProductRequest.encode({
        product: {
          productId: "",
          name: "Large",
          description,
          price: { currencyCode: "EUR", amountMinor: "100" },
          stockQuantity: 1,
          createTime: undefined,
          updateTime: undefined,
        },
      }).finish();
    // 100,000 bytes, and exactly the 65,536 of the stream's window over HTTP/2.
    let size = 65_536;
    while (create("x".repeat(size)).length > 65_536) size--;
    const exact = create("x".repeat(size));
    t.is(exact.length, 65_536);
    for (const message of [create("x".repeat(100_000)), exact]) {
      const reply = await connectUnary(
        "shop.product.v1.ProductService/CreateProduct",
        message,
        ADMIN_TOKEN,
      );
      t.is(reply.type, "application/json", reply.body);
      const error = JSON.parse(reply.body) as {
        code: string;
        details?: { type: string; value: string }[];
      };
      t.is(error.code, "resource_exhausted", `${message.length} bytes`);
      const info = error.details?.find((detail) => detail.type === "google.rpc.ErrorInfo");
      t.like(info && ErrorInfo.decode(Buffer.from(info.value, "base64")), {
        reason: "REQUEST_TOO_LARGE",
        domain: "shopmesh.edge",
      });
    }
  },
);

test.serial(
  "Connect: a list's page fits what the bridge holds of a unary reply, and its token reads on",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const c = mesh.clients();
    // 40 products of 2,000 characters each: 80 KB, past the 64 KiB the bridge holds over HTTP/2.
    const description = "x".repeat(2_000);
    const made = await Promise.all(
      Array.from({ length: 40 }, () =>
        addProduct(c.products, { name: tag("large"), amountMinor: "100", stock: 1, description }),
      ),
    );
    c.close();
    const ids = new Set(made.map((product) => product.productId));
    const seen = new Set<string>();
    let pageToken = "";
    let pages = 0;
    do {
      const reply = await connectUnary(
        "shop.product.v1.ProductService/ListProducts",
        ListProductsRequest.encode(
          ListProductsRequest.fromPartial({ pageSize: 1000, pageToken }),
        ).finish(),
        undefined,
      );
      t.is(reply.status, 200, reply.body.slice(0, 300));
      t.true(reply.bytes.length <= 64 * 1024, `${reply.bytes.length} bytes`);
      const page = ListProductsResponse.decode(reply.bytes);
      for (const product of page.products)
        if (ids.has(product.productId)) seen.add(product.productId);
      pageToken = page.nextPageToken;
      pages++;
    } while (pageToken !== "" && pages < 100);
    t.is(seen.size, ids.size);
    t.true(pages >= 2, `${pages} pages`);
    // Over HTTP/1.1 the bridge holds 1 MiB: the first page holds the 80 KB at once.
    const overHttp1 = await edgeFetch(
      `https://${mesh.front()}/shop.product.v1.ProductService/ListProducts`,
      {
        method: "POST",
        headers: { "content-type": "application/proto", "connect-protocol-version": "1" },
        body: ListProductsRequest.encode(
          ListProductsRequest.fromPartial({ pageSize: 1000 }),
        ).finish(),
      },
    );
    const bytes = Buffer.from(await overHttp1.arrayBuffer());
    t.is(overHttp1.status, 200, bytes.toString().slice(0, 300));
    t.true(bytes.length > 80_000 && bytes.length <= 1024 * 1024, `${bytes.length} bytes`);
  },
);

test.serial("REST: a page over 64 KiB is read whole over HTTP/2 and HTTP/1.1", async (t) => {
  // The 40 products of 2,000 characters from the test before.
  const path = "/products?page_size=1000";
  const overHttp1 = await edgeFetch(`https://${mesh.front()}${path}`);
  const overHttp2 = await new Promise<{ status: number; body: string }>((resolve, reject) => {
    const session = http2.connect(`https://${mesh.front()}`, { ca: CA });
    session.on("error", reject);
    const request = session.request({ ":path": path });
    let status = 0;
    const chunks: Buffer[] = [];
    request.on("response", (headers) => {
      status = Number(headers[":status"]);
    });
    request.on("data", (chunk: Buffer) => chunks.push(chunk));
    request.on("error", reject);
    request.on("end", () => {
      session.close();
      resolve({ status, body: Buffer.concat(chunks).toString() });
    });
  });
  const large = (body: string) =>
    (JSON.parse(body).products as { description: string }[]).filter(
      ({ description }) => description.length === 2_000,
    ).length;
  for (const [protocol, reply] of [
    ["HTTP/1.1", { status: overHttp1.status, body: await overHttp1.text() }],
    ["HTTP/2", overHttp2],
  ] as const) {
    t.is(reply.status, 200, `${protocol}: ${reply.body.slice(0, 300)}`);
    t.true(reply.body.length > 80_000, protocol);
    t.true(large(reply.body) >= 40, protocol);
  }
});

test.serial(
  "REST: a list's page is kept under the edge's REST page bytes, and its token reads on",
  async (t) => {
    await mesh.waitHealthy(["product"]);
    const c = mesh.clients();
    // 400 products of 2,000 characters each: 0.9 MB, one page over gRPC, two or more over REST.
    const description = "y".repeat(2_000);
    const name = tag("rest-page");
    const made = await Promise.all(
      Array.from({ length: 400 }, () =>
        addProduct(c.products, { name, amountMinor: "100", stock: 1, description }),
      ),
    );
    const overGrpc = await c.products.listProducts({ pageSize: 1000, pageToken: "" });
    c.close();
    const mine = (products: { name: string }[]) =>
      products.filter((product) => product.name === name);
    t.is(mine(overGrpc.products).length, made.length, "gRPC: one page");
    let pageToken = "";
    let listed = 0;
    let pages = 0;
    do {
      const reply = await edgeFetch(
        `https://${mesh.front()}/products?page_size=1000&page_token=${encodeURIComponent(pageToken)}`,
      );
      const body = await reply.text();
      t.is(reply.status, 200, body.slice(0, 300));
      const page = JSON.parse(body) as {
        products: { name: string; description: string }[];
        next_page_token?: string;
      };
      const bytes = page.products.reduce((sum, product) => sum + product.description.length, 0);
      t.true(bytes <= REST_PAGE_BYTES, `${bytes} bytes of descriptions`);
      listed += mine(page.products).length;
      pageToken = page.next_page_token ?? "";
      pages++;
    } while (pageToken !== "" && pages < 100);
    t.is(listed, made.length);
    t.true(pages >= 2, `${pages} pages`);
    // A caller may ask for smaller pages still.
    const small = await edgeFetch(`https://${mesh.front()}/products?page_size=1000`, {
      headers: { "shopmesh-page-bytes": "16384" },
    });
    const page = JSON.parse(await small.text()) as {
      products: { description: string }[];
      next_page_token: string;
    };
    const bytes = page.products.reduce((sum, product) => sum + product.description.length, 0);
    t.true(page.products.length > 0 && bytes <= 16_384, `${bytes} bytes of descriptions`);
    t.not(page.next_page_token, "");
  },
);

test.serial("Connect: the access log states the code of each refusal of the edge", async (t) => {
  await mesh.waitHealthy(["order", "product"]);
  const missing = tag("connect-no-token");
  await connectUnary(
    "shop.order.v1.OrderService/GetOrder",
    GetOrderRequest.encode({ orderId: "ord_none" }).finish(),
    undefined,
    { "x-request-id": missing },
  );
  const large = tag("connect-too-large");
  await connectUnary(
    "shop.product.v1.ProductService/GetProduct",
    GetProductRequest.encode({ productId: "x".repeat(100_000) }).finish(),
    undefined,
    { "x-request-id": large },
  );
  for (const [id, code] of [
    [missing, 16],
    [large, 8],
  ] as const) {
    const [line] = await mesh.loggedRequests(id, 1);
    t.is(line?.grpc_status, code, JSON.stringify(line));
  }
});
