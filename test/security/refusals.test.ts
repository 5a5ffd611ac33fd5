// The security boundary, refused through every door that applies: one fleet of real service
// processes running mutual TLS with the development credentials, one real Envoy in front of it
// with TLS at the edge, and each case sent
//
//   direct:   gRPC to the service's own port, as an operator's tool (the cli identity);
//   envoy:    gRPC to Envoy's TLS listener;
//   grpc-web: gRPC-Web (HTTP/1.1) to Envoy;
//   rest:     the REST path to Envoy, transcoded;
//
// checking the code, the ErrorInfo reason, and that no row of any store changed. Then the mesh's
// own refusals: internal rpcs from the wrong identity, plaintext and foreign certificates.
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import * as grpc from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import { CompactSign, decodeJwt, importPKCS8, type JWTPayload, SignJWT } from "jose";
import knex from "knex";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import { Status } from "../../gen/ts/google/rpc/status.js";
import { type Order, OrderServiceService } from "../../gen/ts/shop/order/v1/order.js";
import { InventoryServiceService } from "../../gen/ts/shop/product/v1/inventory.js";
import { type Product, ProductServiceService } from "../../gen/ts/shop/product/v1/product.js";
import { type User, UserServiceService } from "../../gen/ts/shop/user/v1/user.js";
import { createClient } from "../../kit/client/index.js";
import { completerOf, contractMethods } from "../../kit/contract.js";
import { Code, decodeStatus } from "../../kit/errors.js";
import { DEV_AUDIENCE, DEV_ISSUER } from "../../kit/security/security.js";
import { channelCredentials, readTls } from "../../kit/security/tls.js";
import { identityFiles, makeCredentials, signToken } from "../../scripts/lib/credentials.js";
import { addProduct, addUser } from "../../scripts/lib/seed.js";
import {
  ADMIN_TOKEN,
  CERTS,
  edgeFetch,
  edgeTransport,
  meshTransport,
  testCallers,
  tokenFor,
} from "../helpers/credentials.js";
import { type EnvoyHandle, startEnvoy } from "../helpers/envoy.js";
import { fleetEndpoints, type ProcessFleet, spawnProcessFleet } from "../helpers/fleet.js";
import { grpcFrame } from "../helpers/grpc-frame.js";

/** The one origin browsers may call this Envoy from. */
const SHOP_ORIGIN = "https://shop.example";

type Door = "direct" | "envoy" | "grpc-web" | "rest";
const DOORS: readonly Door[] = ["direct", "envoy", "grpc-web", "rest"];

// biome-ignore lint/suspicious/noExplicitAny: a generated method of any message types.
type Method = grpc.MethodDefinition<any, any>;

interface Outcome {
  code: number;
  reason: string | undefined;
}

let fleet: ProcessFleet;
let envoy: EnvoyHandle;
let foreign: string;
const data = {} as {
  alice: User;
  bob: User;
  product: Product;
  order: Order;
  tokens: Record<"alice" | "bob", string>;
};

test.before(async () => {
  foreign = await mkdtemp(path.join(tmpdir(), "shopmesh-foreign-"));
  const [started] = await Promise.all([
    spawnProcessFleet({ tls: CERTS }),
    // Another CA and JWT key, which the mesh has never heard of.
    makeCredentials(foreign, {
      caName: "foreign CA",
      keyIdPrefix: "foreign-",
      identities: ["order"],
    }),
  ]);
  fleet = started;
  envoy = await startEnvoy({
    services: fleetEndpoints(fleet),
    tls: CERTS,
    corsOrigins: [SHOP_ORIGIN],
  });
  const through = <S extends Parameters<typeof createClient>[0]>(definition: S) =>
    createClient(definition, envoy.address, {
      middleware: testCallers(),
      transport: edgeTransport(),
    });
  const users = through(UserServiceService);
  const products = through(ProductServiceService);
  const orders = through(OrderServiceService);
  data.alice = await addUser(users, { displayName: "Alice" });
  data.bob = await addUser(users, { displayName: "Bob" });
  data.product = await addProduct(products, { stock: 10 });
  data.order = (
    await orders.createOrder({
      userId: data.alice.userId,
      lines: [{ productId: data.product.productId, quantity: 2 }],
      requestId: "alice-1",
    })
  ).order as Order;
  data.tokens = { alice: await tokenFor(data.alice.userId), bob: await tokenFor(data.bob.userId) };
  for (const client of [users, products, orders]) client.close();
});

test.after.always(async () => {
  await envoy?.stop();
  await fleet?.stop();
  if (foreign) await rm(foreign, { recursive: true, force: true });
});

/** Every row of every table of every store, as text: equal before and after means nothing changed. */
async function stores(): Promise<string> {
  const dumps = await Promise.all(
    (["user", "product", "order"] as const).map(async (name) => {
      const db = knex({
        client: "better-sqlite3",
        connection: { filename: fleet.database(name), options: { readonly: true } },
        useNullAsDefault: true,
      });
      try {
        const tables = (await db("sqlite_master")
          .where({ type: "table" })
          .andWhereNot("name", "like", "knex_%")
          .orderBy("name")
          .pluck("name")) as string[];
        const rows = await Promise.all(tables.map((table) => db(table).select()));
        return tables.map((table, i) => `${name}.${table}: ${JSON.stringify(rows[i])}`).join("\n");
      } finally {
        await db.destroy();
      }
    }),
  );
  return dumps.join("\n");
}

/** A partial request with every field the contract defines, as a generated serializer needs. */
function complete(method: Method, request: object): object {
  const [, service, rpc] = method.path.split("/");
  const info = contractMethods(service as string).find((candidate) => candidate.rpc === rpc);
  const completer = completerOf(info?.requestType);
  return completer ? completer(request as Record<string, unknown>) : request;
}

/** The authorization header for `token`: a JWT (dots, no space), or a whole header. */
const authorization = (token: string) =>
  token.includes(".") && !token.includes(" ") ? `Bearer ${token}` : token;

const reasonOf = (bin: Buffer | undefined) => {
  if (!bin) return undefined;
  for (const detail of Status.decode(bin).details) {
    if (detail.typeUrl.endsWith("google.rpc.ErrorInfo"))
      return ErrorInfo.decode(detail.value).reason;
  }
  return undefined;
};

/** A gRPC call on `channel`: its status code and ErrorInfo reason (OK: code 0). */
async function grpcCall(
  address: string,
  transport: { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions },
  method: Method,
  request: object,
  token: string | undefined,
): Promise<Outcome> {
  request = complete(method, request);
  const client = new grpc.Client(address, transport.credentials, transport.options);
  const metadata = new grpc.Metadata();
  if (token) metadata.set("authorization", authorization(token));
  const deadline = Date.now() + 10_000;
  try {
    const error = await new Promise<grpc.ServiceError | null>((resolve) => {
      if (method.responseStream) {
        const stream = client.makeServerStreamRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize,
          request,
          metadata,
          { deadline },
        );
        // The first message means the call got through; a refusal comes before any.
        stream.on("data", () => {
          stream.cancel();
          resolve(null);
        });
        stream.on("error", (e: grpc.ServiceError) => resolve(e.code === Code.CANCELLED ? null : e));
        stream.on("end", () => resolve(null));
      } else {
        client.makeUnaryRequest(
          method.path,
          method.requestSerialize,
          method.responseDeserialize,
          request,
          metadata,
          { deadline },
          (e) => resolve(e),
        );
      }
    });
    if (!error) return { code: Code.OK, reason: undefined };
    return { code: error.code, reason: decodeStatus(error.metadata).reason };
  } finally {
    client.close();
  }
}

/** A gRPC-Web call through Envoy: the status from the headers (trailers only) or the trailer frame. */
async function grpcWebCall(
  method: Method,
  request: object,
  token: string | undefined,
): Promise<Outcome & { http: number }> {
  const message = method.requestSerialize(complete(method, request)) as Buffer;
  const response = await edgeFetch(`https://${envoy.address}${method.path}`, {
    method: "POST",
    headers: {
      "content-type": "application/grpc-web+proto",
      "x-grpc-web": "1",
      ...(token && { authorization: authorization(token) }),
    },
    body: grpcFrame(message),
  });
  const fields = new Map<string, string>();
  for (const [name, value] of response.headers) fields.set(name, value);
  const body = Buffer.from(await response.arrayBuffer());
  for (let at = 0; at + 5 <= body.length; ) {
    const length = body.readUInt32BE(at + 1);
    if ((body[at] as number) & 0x80) {
      for (const line of body
        .subarray(at + 5, at + 5 + length)
        .toString("latin1")
        .split("\r\n")) {
        const colon = line.indexOf(":");
        if (colon > 0)
          fields.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
      }
    }
    at += 5 + length;
  }
  const details = fields.get("grpc-status-details-bin");
  return {
    // gRPC-Web answers 200 and puts the status in headers or trailers: a client reads the code
    // of any other HTTP status from it alone, and drops the details.
    http: response.status,
    code: Number(fields.get("grpc-status") ?? -1),
    reason: reasonOf(details === undefined ? undefined : Buffer.from(details, "base64")),
  };
}

/** HTTP statuses of the gRPC codes these cases expect, as the transcoder maps them. */
const HTTP: Record<number, number> = { 0: 200, 5: 404, 7: 403, 12: 404, 16: 401 };

/** A REST call through Envoy: the google.rpc.Status JSON body's code and ErrorInfo reason. */
async function restCall(
  rest: { method: string; path: string; body?: object },
  token: string | undefined,
): Promise<Outcome & { http: number }> {
  const response = await edgeFetch(`https://${envoy.address}${rest.path}`, {
    method: rest.method,
    headers: {
      ...(rest.body && { "content-type": "application/json" }),
      ...(token && { authorization: authorization(token) }),
    },
    ...(rest.body && { body: JSON.stringify(rest.body) }),
  });
  const text = await response.text();
  if (response.status === 200) return { code: 0, reason: undefined, http: 200 };
  const status = JSON.parse(text) as { code: number; details?: { reason?: string }[] };
  return {
    code: status.code,
    reason: status.details?.find((detail) => detail.reason)?.reason,
    http: response.status,
  };
}

/** The address of the service that serves a method. */
const serviceOf = (method: Method) =>
  method.path.startsWith("/shop.user.")
    ? "user"
    : method.path.startsWith("/shop.order.")
      ? "order"
      : "product";

interface Case {
  name: string;
  method: Method;
  request: () => object;
  rest: () => { method: string; path: string; body?: object };
  token: () => string | undefined;
  code: number;
  reason: string | undefined;
}

/** Sends a case through every door; each must refuse it as expected, with every store unchanged. */
async function refusedEverywhere(t: ExecutionContext, c: Case) {
  for (const door of DOORS) {
    const before = await stores();
    const token = c.token();
    let got: Outcome;
    if (door === "direct") {
      const service = serviceOf(c.method);
      got = await grpcCall(
        fleet.address(service),
        meshTransport("cli", service),
        c.method,
        c.request(),
        token,
      );
    } else if (door === "envoy") {
      got = await grpcCall(envoy.address, edgeTransport(), c.method, c.request(), token);
    } else if (door === "grpc-web") {
      const { http, ...rest } = await grpcWebCall(c.method, c.request(), token);
      t.is(http, 200, `${c.name} (grpc-web): HTTP status`);
      got = rest;
    } else {
      const { http, ...rest } = await restCall(c.rest(), token);
      t.is(http, HTTP[c.code] as number, `${c.name} (rest): HTTP status`);
      got = rest;
    }
    t.deepEqual(got, { code: c.code, reason: c.reason }, `${c.name} (${door})`);
    t.is(await stores(), before, `${c.name} (${door}) changed a store`);
  }
}

const get = (id: () => string) => ({ method: "GET", path: `/users/${id()}` });
const getUser = (
  token: () => string | undefined,
  code: number,
  reason: string | undefined,
  name: string,
): Case => ({
  name,
  method: UserServiceService.getUser,
  request: () => ({ userId: data.alice.userId }),
  rest: () => get(() => data.alice.userId),
  token,
  code,
  reason,
});

const sign = (options: Parameters<typeof signToken>[0]) => signToken(options);

test.serial(
  "no token, an expired token, another key's, and a wrong issuer or audience: UNAUTHENTICATED",
  async (t) => {
    const alice = data.alice.userId;
    const tokens = {
      expired: await sign({ user: alice, ttlSeconds: -120 }),
      foreignKey: await sign({ user: alice, dir: foreign }),
      issuer: await sign({ user: alice, issuer: "https://issuer.example" }),
      audience: await sign({ user: alice, audience: "another-api" }),
    };
    const cases: Case[] = [
      getUser(() => undefined, Code.UNAUTHENTICATED, "TOKEN_MISSING", "no token"),
      getUser(() => tokens.expired, Code.UNAUTHENTICATED, "TOKEN_EXPIRED", "an expired token"),
      getUser(
        () => tokens.foreignKey,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "a token signed by another key",
      ),
      getUser(
        () => tokens.issuer,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "a token of another issuer",
      ),
      getUser(
        () => tokens.audience,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "a token for another audience",
      ),
      {
        name: "CreateOrder without a token",
        method: OrderServiceService.createOrder,
        request: () => ({
          userId: alice,
          lines: [{ productId: data.product.productId, quantity: 1 }],
          requestId: "nope",
        }),
        rest: () => ({
          method: "POST",
          path: "/orders",
          body: {
            user_id: alice,
            lines: [{ product_id: data.product.productId, quantity: 1 }],
            request_id: "nope",
          },
        }),
        token: () => undefined,
        code: Code.UNAUTHENTICATED,
        reason: "TOKEN_MISSING",
      },
    ];
    for (const c of cases) await refusedEverywhere(t, c);
  },
);

/** A WatchOrder as `token`'s caller: when each message came, and how and when the stream ended. */
function watchAs(
  address: string,
  transport: { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions },
  token: string,
) {
  const client = new grpc.Client(address, transport.credentials, transport.options);
  const metadata = new grpc.Metadata();
  metadata.set("authorization", `Bearer ${token}`);
  const method = OrderServiceService.watchOrder;
  const stream = client.makeServerStreamRequest(
    method.path,
    method.requestSerialize,
    method.responseDeserialize,
    complete(method, { orderId: data.order.orderId }) as { orderId: string },
    metadata,
    { deadline: Date.now() + 30_000 },
  );
  const messages: number[] = [];
  stream.on("data", () => messages.push(Date.now()));
  const ended = new Promise<Outcome & { at: number }>((resolve) => {
    stream.on("error", (e: grpc.ServiceError) =>
      resolve({ code: e.code, reason: decodeStatus(e.metadata).reason, at: Date.now() }),
    );
    stream.on("end", () => resolve({ code: Code.OK, reason: undefined, at: Date.now() }));
  });
  return {
    messages,
    ended,
    stop: () => {
      stream.cancel();
      client.close();
    },
  };
}

test.serial(
  "a WatchOrder ends UNAUTHENTICATED (TOKEN_EXPIRED) when its token would no longer be accepted, directly and through Envoy",
  async (t) => {
    // Accepted for about 3 s more: tokens pass for 30 s past their exp, for clock skew.
    const expiring = await sign({ user: data.alice.userId, ttlSeconds: -27 });
    const acceptedUntil = (decodeJwt(expiring).exp as number) * 1000 + 30_000;
    const doors = [
      { door: "direct", address: fleet.address("order"), transport: meshTransport("cli", "order") },
      { door: "envoy", address: envoy.address, transport: edgeTransport() },
    ];
    const watches = doors.map(({ door, address, transport }) => ({
      door,
      expiring: watchAs(address, transport, expiring),
      lasting: watchAs(address, transport, data.tokens.alice),
    }));
    t.teardown(() => {
      for (const watch of watches) {
        watch.expiring.stop();
        watch.lasting.stop();
      }
    });
    for (const { door, expiring, lasting } of watches) {
      const end = await expiring.ended;
      t.like(end, { code: Code.UNAUTHENTICATED, reason: "TOKEN_EXPIRED" }, door);
      t.is(expiring.messages.length, 1, `${door}: the order as it was, before the token expired`);
      // Timers may fire a little early by the clock; the server's clock is this one.
      t.true(end.at >= acceptedUntil - 50, `${door}: ended ${acceptedUntil - end.at} ms early`);
      t.true(end.at < acceptedUntil + 5_000, `${door}: ended ${end.at - acceptedUntil} ms late`);
      t.is(lasting.messages.length, 1, `${door}: the watch with a valid token has its message`);
      const stillOpen = await Promise.race([
        lasting.ended.then(() => false),
        new Promise((resolve) => setTimeout(resolve, 100, true)),
      ]);
      t.true(stillOpen, `${door}: the watch with a valid token goes on`);
    }
  },
);

test.serial(
  "every door reads the authorization header alike: the scheme, the token's expiry and subject",
  async (t) => {
    const alice = data.alice.userId;
    const key = await importPKCS8(await readFile(path.join(CERTS, "jwt.key"), "utf8"), "ES256");
    const { keys } = JSON.parse(await readFile(path.join(CERTS, "jwks.json"), "utf8")) as {
      keys: { kid: string }[];
    };
    /** A token of the development key with only the claims given. */
    const signed = (claims: JWTPayload) =>
      new SignJWT({ iss: DEV_ISSUER, aud: DEV_AUDIENCE, ...claims })
        .setProtectedHeader({ alg: "ES256", kid: keys[0]?.kid ?? "" })
        .sign(key);
    /** A token of the development key whose payload is `json`, as written. */
    const signedText = (json: string) =>
      new CompactSign(new TextEncoder().encode(json))
        .setProtectedHeader({ alg: "ES256", kid: keys[0]?.kid ?? "" })
        .sign(key);
    const exp = Math.floor(Date.now() / 1000) + 3600;
    const claims = `"iss":"${DEV_ISSUER}","aud":"${DEV_AUDIENCE}","exp":${exp}`;
    const tokens = {
      lowercase: `bearer ${data.tokens.alice}`,
      // The edge finds a bearer token after another scheme, and refuses an expired one.
      lateExpired: `Basic YWxpY2U6c2VjcmV0, Bearer ${await sign({ user: alice, ttlSeconds: -120 })}`,
      lateValid: `Basic YWxpY2U6c2VjcmV0, Bearer ${data.tokens.alice}`,
      negativeExpiry: await signed({ sub: alice, exp: -1 }),
      // jose keeps the last of two keys, and drops a byte-order mark; the edge refuses both.
      twoSubjects: await signedText(`{"sub":"usr_someone_else","sub":"${alice}",${claims}}`),
      twoRoleLists: await signedText(`{"sub":"${alice}","roles":[],"roles":["admin"],${claims}}`),
      escapedTwice: await signedText(
        `{"sub":"${alice}","ro\\u006ces":["admin"],"roles":[],${claims}}`,
      ),
      byteOrderMark: await signedText(`\ufeff{"sub":"${alice}",${claims}}`),
      basic: "Basic YWxpY2U6c2VjcmV0",
      trailing: `Bearer ${data.tokens.alice} more`,
      twice: `Bearer ${data.tokens.alice},Bearer ${data.tokens.alice}`,
      noExpiry: await signed({ sub: alice }),
      noIssuer: await signed({ sub: alice, exp, iss: undefined }),
      noSubject: await signed({ exp }),
      emptySubject: await signed({ sub: "", exp }),
      // Envoy reads a NumericDate into 64 bits, and a subject as one line of text (RE2's `.+`).
      hugeExpiry: await signed({ sub: alice, exp: 1e300 }),
      expiryPast64Bits: await signed({ sub: alice, exp: 2 ** 64 }),
      fractionalTimes: await signed({ sub: alice, exp: exp + 0.5, nbf: 1.5, iat: 2.25 }),
      hugeIssuedAt: await signed({ sub: alice, exp, iat: 1e300 }),
      newlineSubject: await signed({ sub: "\n", exp }),
      twoLineSubject: await signed({ sub: `${alice}\nadmin`, exp }),
      loneSurrogate: await signed({ sub: `${alice}\ud800`, exp }),
    };
    const listUsers = (token: string, name: string): Case => ({
      name,
      method: UserServiceService.listUsers,
      request: () => ({}),
      rest: () => ({ method: "GET", path: "/users" }),
      token: () => token,
      code: Code.UNAUTHENTICATED,
      reason: "TOKEN_INVALID",
    });
    const cases: Case[] = [
      getUser(() => tokens.lowercase, Code.OK, undefined, "the scheme in lower case"),
      {
        name: "an expired token after another scheme, on an open rpc",
        method: ProductServiceService.getProduct,
        request: () => ({ productId: data.product.productId }),
        rest: () => ({ method: "GET", path: `/products/${data.product.productId}` }),
        token: () => tokens.lateExpired,
        code: Code.UNAUTHENTICATED,
        reason: "TOKEN_EXPIRED",
      },
      // The edge lets it through; the service refuses it.
      getUser(
        () => tokens.lateValid,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "a valid token after another scheme",
      ),
      getUser(() => tokens.negativeExpiry, Code.UNAUTHENTICATED, "TOKEN_INVALID", "an exp of -1"),
      getUser(() => tokens.twoSubjects, Code.UNAUTHENTICATED, "TOKEN_INVALID", "two subs"),
      getUser(() => tokens.byteOrderMark, Code.UNAUTHENTICATED, "TOKEN_INVALID", "a BOM"),
      listUsers(tokens.twoRoleLists, "two roles claims, the last naming admin"),
      listUsers(tokens.escapedTwice, "two roles claims, one spelt with an escape"),
      getUser(() => tokens.basic, Code.UNAUTHENTICATED, "TOKEN_MISSING", "another scheme"),
      getUser(() => "Bearer", Code.UNAUTHENTICATED, "TOKEN_MISSING", "a scheme without a token"),
      getUser(
        () => tokens.trailing,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "a word after the token",
      ),
      getUser(
        () => tokens.twice,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "two tokens in one header",
      ),
      getUser(() => tokens.noExpiry, Code.UNAUTHENTICATED, "TOKEN_INVALID", "a token without exp"),
      getUser(() => tokens.noIssuer, Code.UNAUTHENTICATED, "TOKEN_INVALID", "a token without iss"),
      getUser(() => tokens.noSubject, Code.UNAUTHENTICATED, "TOKEN_INVALID", "a token without sub"),
      getUser(() => tokens.emptySubject, Code.UNAUTHENTICATED, "TOKEN_INVALID", "an empty sub"),
      getUser(() => tokens.hugeExpiry, Code.UNAUTHENTICATED, "TOKEN_INVALID", "an exp of 1e300"),
      getUser(() => tokens.expiryPast64Bits, Code.UNAUTHENTICATED, "TOKEN_INVALID", "exp 2^64"),
      getUser(() => tokens.fractionalTimes, Code.OK, undefined, "fractional times"),
      getUser(
        () => tokens.loneSurrogate,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "a sub with half a surrogate pair",
      ),
      getUser(() => tokens.hugeIssuedAt, Code.UNAUTHENTICATED, "TOKEN_INVALID", "an iat of 1e300"),
      getUser(
        () => tokens.newlineSubject,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "a sub of a newline",
      ),
      getUser(
        () => tokens.twoLineSubject,
        Code.UNAUTHENTICATED,
        "TOKEN_INVALID",
        "a sub of two lines",
      ),
    ];
    for (const c of cases) await refusedEverywhere(t, c);
    // jwt_authn reads an access_token query parameter unless told where tokens are.
    t.deepEqual(
      await grpcCall(
        envoy.address,
        edgeTransport(),
        {
          ...UserServiceService.getUser,
          path: `${UserServiceService.getUser.path}?access_token=${data.tokens.alice}`,
        },
        { userId: alice },
        undefined,
      ),
      { code: Code.UNAUTHENTICATED, reason: "TOKEN_MISSING" },
    );
  },
);

test.serial(
  "another user's order (Get, List, Watch, Cancel) and record: PERMISSION_DENIED NOT_OWNER",
  async (t) => {
    const bob = () => data.tokens.bob;
    const orderId = () => data.order.orderId;
    const cases: Case[] = [
      {
        name: "GetOrder of Alice's order, as Bob",
        method: OrderServiceService.getOrder,
        request: () => ({ orderId: orderId() }),
        rest: () => ({ method: "GET", path: `/orders/${orderId()}` }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "NOT_OWNER",
      },
      {
        name: "ListOrders of Alice's orders, as Bob",
        method: OrderServiceService.listOrders,
        request: () => ({ userId: data.alice.userId }),
        rest: () => ({ method: "GET", path: `/orders?user_id=${data.alice.userId}` }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "NOT_OWNER",
      },
      {
        name: "ListOrders of every user's orders, as Bob",
        method: OrderServiceService.listOrders,
        request: () => ({}),
        rest: () => ({ method: "GET", path: "/orders" }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "ADMIN_REQUIRED",
      },
      {
        name: "WatchOrder of Alice's order, as Bob",
        method: OrderServiceService.watchOrder,
        request: () => ({ orderId: orderId() }),
        rest: () => ({ method: "GET", path: `/orders/${orderId()}:watch` }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "NOT_OWNER",
      },
      {
        name: "CancelOrder of Alice's order, as Bob",
        method: OrderServiceService.cancelOrder,
        request: () => ({ orderId: orderId() }),
        rest: () => ({ method: "POST", path: `/orders/${orderId()}:cancel`, body: {} }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "NOT_OWNER",
      },
      {
        name: "CreateOrder for Alice, as Bob",
        method: OrderServiceService.createOrder,
        request: () => ({
          userId: data.alice.userId,
          lines: [{ productId: data.product.productId, quantity: 1 }],
          requestId: "bob-for-alice",
        }),
        rest: () => ({
          method: "POST",
          path: "/orders",
          body: {
            user_id: data.alice.userId,
            lines: [{ product_id: data.product.productId, quantity: 1 }],
            request_id: "bob-for-alice",
          },
        }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "NOT_OWNER",
      },
      getUser(bob, Code.PERMISSION_DENIED, "NOT_OWNER", "GetUser of Alice, as Bob"),
    ];
    for (const c of cases) await refusedEverywhere(t, c);
    // Alice, and an admin, may.
    const alice = await grpcCall(
      envoy.address,
      edgeTransport(),
      OrderServiceService.getOrder,
      { orderId: orderId() },
      data.tokens.alice,
    );
    t.is(alice.code, Code.OK);
    const admin = await grpcCall(
      envoy.address,
      edgeTransport(),
      OrderServiceService.getOrder,
      { orderId: orderId() },
      ADMIN_TOKEN,
    );
    t.is(admin.code, Code.OK);
  },
);

test.serial(
  "product writes and user administration without role admin: PERMISSION_DENIED ADMIN_REQUIRED",
  async (t) => {
    const bob = () => data.tokens.bob;
    const cases: Case[] = [
      {
        name: "UpdateProduct, as a user",
        method: ProductServiceService.updateProduct,
        request: () => ({
          product: { productId: data.product.productId, stockQuantity: 1_000 },
          updateMask: ["stock_quantity"],
        }),
        rest: () => ({
          method: "PATCH",
          path: `/products/${data.product.productId}?update_mask=stock_quantity`,
          body: { stock_quantity: 1_000 },
        }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "ADMIN_REQUIRED",
      },
      {
        name: "CreateProduct, as a user",
        method: ProductServiceService.createProduct,
        request: () => ({
          product: {
            name: "Free mug",
            price: { currencyCode: "EUR", amountMinor: "0" },
            stockQuantity: 1,
          },
        }),
        rest: () => ({
          method: "POST",
          path: "/products",
          body: {
            name: "Free mug",
            price: { currency_code: "EUR", amount_minor: "0" },
            stock_quantity: 1,
          },
        }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "ADMIN_REQUIRED",
      },
      {
        name: "DeleteUser, as a user",
        method: UserServiceService.deleteUser,
        request: () => ({ userId: data.alice.userId }),
        rest: () => ({ method: "DELETE", path: `/users/${data.alice.userId}` }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "ADMIN_REQUIRED",
      },
      {
        name: "ListUsers, as a user",
        method: UserServiceService.listUsers,
        request: () => ({}),
        rest: () => ({ method: "GET", path: "/users" }),
        token: bob,
        code: Code.PERMISSION_DENIED,
        reason: "ADMIN_REQUIRED",
      },
    ];
    for (const c of cases) await refusedEverywhere(t, c);
  },
);

test.serial(
  "the old exploit: ReleaseReservation of a confirmed order through the edge is refused, stock unchanged",
  async (t) => {
    const before = await stores();
    const request = { reservationId: `order:${data.order.orderId}` };
    // The edge has no route for the internal API: gRPC and gRPC-Web get UNIMPLEMENTED, REST a 404.
    t.like(
      await grpcCall(
        envoy.address,
        edgeTransport(),
        InventoryServiceService.releaseReservation,
        request,
        ADMIN_TOKEN,
      ),
      { code: Code.UNIMPLEMENTED, reason: "UNKNOWN_METHOD" },
    );
    t.like(await grpcWebCall(InventoryServiceService.releaseReservation, request, ADMIN_TOKEN), {
      code: Code.UNIMPLEMENTED,
      reason: "UNKNOWN_METHOD",
    });
    for (const rest of [
      { method: "POST", path: `/reservations/order:${data.order.orderId}:release`, body: {} },
      { method: "POST", path: "/reservations", body: { reservation_id: "r-1", lines: [] } },
    ]) {
      t.like(await restCall(rest, ADMIN_TOKEN), { http: 404, code: Code.NOT_FOUND }, rest.path);
    }
    // The edge's own identity, straight to the product port, is refused by the service.
    t.deepEqual(
      await grpcCall(
        fleet.address("product"),
        meshTransport("edge", "product"),
        InventoryServiceService.releaseReservation,
        request,
        ADMIN_TOKEN,
      ),
      { code: Code.PERMISSION_DENIED, reason: "INTERNAL_API" },
    );
    t.is(await stores(), before);
  },
);

test.serial(
  "internal rpcs from any identity but order: PERMISSION_DENIED INTERNAL_API; order's own: served",
  async (t) => {
    const before = await stores();
    const request = { reservationId: `order:${data.order.orderId}` };
    for (const identity of ["user", "cli", "edge"]) {
      for (const method of [
        InventoryServiceService.releaseReservation,
        InventoryServiceService.commitReservation,
      ]) {
        t.deepEqual(
          await grpcCall(
            fleet.address("product"),
            meshTransport(identity, "product"),
            method,
            request,
            ADMIN_TOKEN,
          ),
          { code: Code.PERMISSION_DENIED, reason: "INTERNAL_API" },
          `${identity} ${method.path}`,
        );
      }
    }
    const reserve = {
      reservationId: "stranger-1",
      lines: [{ productId: data.product.productId, quantity: 1 }],
    };
    t.like(
      await grpcCall(
        fleet.address("product"),
        meshTransport("user", "product"),
        InventoryServiceService.reserveStock,
        reserve,
        undefined,
      ),
      { code: Code.PERMISSION_DENIED, reason: "INTERNAL_API" },
    );
    t.is(await stores(), before);
    // The order identity may: committing a committed reservation is a no-op.
    t.like(
      await grpcCall(
        fleet.address("product"),
        meshTransport("order", "product"),
        InventoryServiceService.commitReservation,
        request,
        undefined,
      ),
      { code: Code.OK },
    );
    t.is(await stores(), before);
  },
);

test.serial(
  "a plaintext client and a client certificate from a foreign CA cannot reach an mTLS port",
  async (t) => {
    const before = await stores();
    const foreignOrder = channelCredentials(readTls(identityFiles(foreign, "order")), "product");
    const noClientCert = {
      credentials: grpc.credentials.createSsl(readTls(identityFiles(CERTS, "cli")).ca),
      options: { "grpc.ssl_target_name_override": "product" },
    };
    for (const [what, transport] of [
      ["plaintext", { credentials: grpc.credentials.createInsecure(), options: {} }],
      ["a foreign CA's order certificate", foreignOrder],
      ["TLS without a client certificate", noClientCert],
    ] as const) {
      for (const [method, request] of [
        [
          InventoryServiceService.releaseReservation,
          { reservationId: `order:${data.order.orderId}` },
        ],
        [OrderServiceService.getOrder, { orderId: data.order.orderId }],
      ] as const) {
        const service = serviceOf(method);
        const got = await grpcCall(fleet.address(service), transport, method, request, ADMIN_TOKEN);
        t.is(got.code, Code.UNAVAILABLE, `${what} → ${method.path}`);
      }
    }
    // Envoy refuses a plaintext client at its TLS listener the same way.
    const plain = await grpcCall(
      envoy.address,
      { credentials: grpc.credentials.createInsecure(), options: {} },
      ProductServiceService.getProduct,
      { productId: data.product.productId },
      undefined,
    );
    t.is(plain.code, Code.UNAVAILABLE);
    t.is(await stores(), before);
  },
);

test.serial(
  "open reads need no token through any door, and the admin's writes go through",
  async (t) => {
    const product = { productId: data.product.productId };
    t.like(
      await grpcCall(
        envoy.address,
        edgeTransport(),
        ProductServiceService.getProduct,
        product,
        undefined,
      ),
      { code: 0 },
    );
    t.like(await grpcWebCall(ProductServiceService.listProducts, {}, undefined), { code: 0 });
    t.like(await restCall({ method: "GET", path: `/products/${product.productId}` }, undefined), {
      code: 0,
    });
    t.like(
      await grpcCall(
        fleet.address("product"),
        meshTransport("cli", "product"),
        ProductServiceService.getProduct,
        product,
        undefined,
      ),
      { code: 0 },
    );
    // An open rpc still refuses a bad token.
    t.deepEqual(
      await grpcCall(
        envoy.address,
        edgeTransport(),
        ProductServiceService.getProduct,
        product,
        "not.a.token",
      ),
      { code: Code.UNAUTHENTICATED, reason: "TOKEN_INVALID" },
    );
    const renamed = await restCall(
      {
        method: "PATCH",
        path: `/products/${product.productId}?update_mask=name`,
        body: { name: "Renamed by an admin" },
      },
      ADMIN_TOKEN,
    );
    t.is(renamed.code, 0);
  },
);

test.serial("CORS allows the configured origin only, for preflights and calls alike", async (t) => {
  const preflight = (origin: string, path = "/orders") =>
    edgeFetch(`https://${envoy.address}${path}`, {
      method: "OPTIONS",
      headers: {
        origin,
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
      },
    });
  const allowed = await preflight(SHOP_ORIGIN);
  t.is(allowed.status, 200);
  t.is(allowed.headers.get("access-control-allow-origin"), SHOP_ORIGIN);
  t.regex(allowed.headers.get("access-control-allow-headers") ?? "", /authorization/);
  const refused = await preflight("https://evil.example");
  t.is(refused.headers.get("access-control-allow-origin"), null);
  t.not(refused.status, 200);
  // On a gRPC path too, which has a route of its own to the service: answered at the edge.
  const grpcPath = "/shop.product.v1.ProductService/GetProduct";
  const allowedGrpc = await preflight(SHOP_ORIGIN, grpcPath);
  t.is(allowedGrpc.status, 200);
  t.is(allowedGrpc.headers.get("access-control-allow-origin"), SHOP_ORIGIN);
  const refusedGrpc = await preflight("https://evil.example", grpcPath);
  t.is(refusedGrpc.status, 404);
  t.is(refusedGrpc.headers.get("access-control-allow-origin"), null);
  // A browser sends no token with a preflight: one for an rpc that needs a token is no 401.
  for (const rpc of ["GetUser", "ListUsers"]) {
    const signedIn = await preflight("https://evil.example", `/shop.user.v1.UserService/${rpc}`);
    t.is(signedIn.status, 404, rpc);
    t.like(
      await signedIn.json(),
      { code: Code.NOT_FOUND, details: [{ reason: "ROUTE_NOT_FOUND" }] },
      rpc,
    );
  }
  // Only a preflight skips the token checks, and an OPTIONS that is not one never reaches a
  // service: without an origin, with an empty method to ask for, or with neither. Without a
  // token it is refused as any call is; with one, no route takes it.
  const notPreflights: Record<string, string>[] = [
    { "access-control-request-method": "POST" },
    { origin: SHOP_ORIGIN, "access-control-request-method": "" },
    { origin: SHOP_ORIGIN },
    {},
  ];
  const listUsers = `https://${envoy.address}/shop.user.v1.UserService/ListUsers`;
  for (const headers of notPreflights) {
    const label = JSON.stringify(headers);
    const anonymous = await edgeFetch(listUsers, { method: "OPTIONS", headers });
    t.is(anonymous.status, 401, label);
    const signedIn = await edgeFetch(listUsers, {
      method: "OPTIONS",
      headers: { ...headers, authorization: `Bearer ${ADMIN_TOKEN}` },
    });
    t.is(signedIn.status, 404, label);
    t.like(
      await signedIn.json(),
      { code: Code.NOT_FOUND, details: [{ domain: "shopmesh.edge", reason: "ROUTE_NOT_FOUND" }] },
      label,
    );
  }
  // And for a Connect GET's URL, whose query Envoy's bridge would otherwise take for a call.
  const connectGet = await preflight(
    SHOP_ORIGIN,
    `${grpcPath}?connect=v1&encoding=proto&base64=1&message=CghwcmRfbm9uZQ`,
  );
  t.is(connectGet.status, 200);
  t.is(connectGet.headers.get("access-control-allow-origin"), SHOP_ORIGIN);

  const read = (origin: string) =>
    edgeFetch(`https://${envoy.address}/products/${data.product.productId}`, {
      headers: { origin },
    });
  t.is((await read(SHOP_ORIGIN)).headers.get("access-control-allow-origin"), SHOP_ORIGIN);
  t.is((await read("https://evil.example")).headers.get("access-control-allow-origin"), null);

  // Envoy's own answers, which no upstream sends (no route, a malformed grpc-timeout, the Lua
  // filter's refusals): a page on the allowed origin can read their status too.
  const grpcWeb = { "content-type": "application/grpc-web+proto" };
  const json = { "content-type": "application/json" };
  const connectJson = { ...json, "connect-protocol-version": "1" };
  const answers: {
    path: string;
    headers: Record<string, string>;
    status: number;
    grpcStatus?: string;
    method?: string;
    body?: string;
  }[] = [
    { path: "/shop.nope.v1.NopeService/Nope", headers: grpcWeb, status: 200, grpcStatus: "12" },
    {
      path: grpcPath,
      headers: { ...grpcWeb, "grpc-timeout": "soon" },
      status: 200,
      grpcStatus: "3",
    },
    { path: "/no/such/path", headers: json, status: 404 },
    { path: "/orders?user_id=someone", headers: json, status: 400 },
    // The transcoder's own refusals: a body, and a query value, it cannot read.
    { path: "/orders", headers: json, status: 400, body: "{bad" },
    { path: "/products?page_size=abc", headers: {}, status: 400, method: "GET" },
    { path: grpcPath, headers: connectJson, status: 415 },
  ];
  for (const answer of answers) {
    const ask = (origin: string) =>
      edgeFetch(`https://${envoy.address}${answer.path}`, {
        method: answer.method ?? "POST",
        headers: { origin, authorization: `Bearer ${ADMIN_TOKEN}`, ...answer.headers },
        ...(answer.method !== "GET" && {
          body:
            answer.body ??
            (answer.headers["content-type"] === json["content-type"] ? "{}" : new Uint8Array(5)),
        }),
      });
    const allowedAnswer = await ask(SHOP_ORIGIN);
    t.is(allowedAnswer.status, answer.status, answer.path);
    t.is(allowedAnswer.headers.get("grpc-status"), answer.grpcStatus ?? null, answer.path);
    t.is(allowedAnswer.headers.get("access-control-allow-origin"), SHOP_ORIGIN, answer.path);
    t.regex(allowedAnswer.headers.get("access-control-expose-headers") ?? "", /grpc-status/);
    const other = await ask("https://evil.example");
    t.is(other.status, allowedAnswer.status, answer.path);
    t.is(other.headers.get("access-control-allow-origin"), null, answer.path);
  }
});

/** Envoy's jwt_authn counters of its verified-token cache (the listener's stat prefix: ingress). */
const tokenCache = async () => ({
  hit: await envoy.counter("http.ingress.jwt_authn.jwt_cache_hit"),
  miss: await envoy.counter("http.ingress.jwt_authn.jwt_cache_miss"),
});

test.serial(
  "Envoy checks a token's signature once; a refused token is checked every time",
  async (t) => {
    const alice = data.alice.userId;
    const fresh = await sign({ user: alice });
    const forged = await sign({ user: alice, dir: foreign });
    const call = (token: string) =>
      grpcCall(
        envoy.address,
        edgeTransport(),
        UserServiceService.getUser,
        { userId: alice },
        token,
      );

    const before = await tokenCache();
    for (let i = 0; i < 3; i++) t.is((await call(fresh)).code, Code.OK);
    const accepted = await tokenCache();
    t.is(accepted.miss - before.miss, 1, "the first call verifies the new token");
    t.is(accepted.hit - before.hit, 2, "the next two find it verified");

    for (let i = 0; i < 2; i++) {
      t.deepEqual(await call(forged), { code: Code.UNAUTHENTICATED, reason: "TOKEN_INVALID" });
    }
    const refused = await tokenCache();
    t.is(refused.hit, accepted.hit, "a refused token is never remembered");
    t.is(refused.miss - accepted.miss, 2);
  },
);
