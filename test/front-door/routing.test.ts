// `npm run mesh` end to end, the front door: the banner's commands, generated clients and grpcurl
// spread over every replica, REST and gRPC-Web through Envoy (test/helpers/front-door.ts).
import { credentials, type Metadata } from "@grpc/grpc-js";
import test from "ava";
import { OrderServiceClient, OrderState } from "../../gen/ts/shop/order/v1/order.js";
import { type Product, ProductServiceClient } from "../../gen/ts/shop/product/v1/product.js";
import {
  GetUserRequest,
  GetUserResponse,
  type User,
  UserServiceClient,
} from "../../gen/ts/shop/user/v1/user.js";
import { Code } from "../../kit/errors.js";
import { repoRoot } from "../../scripts/lib/launcher.js";
import { registry } from "../../services/registry.js";
import { ADMIN_TOKEN, CA, CERTS, edgeFetch, tokenFor } from "../helpers/credentials.js";
import { exec, grpcurl } from "../helpers/exec.js";
import { orderLine } from "../helpers/fleet.js";
import { callback, newProduct, newUser, tag, useMesh, withId } from "../helpers/front-door.js";
import { grpcFrame } from "../helpers/grpc-frame.js";

const mesh = useMesh();

/** The store's services, which these tests call by their rpcs. */
const SHOP = ["user", "product", "order"] as const;
type Shop = (typeof SHOP)[number];

test.serial("the banner's grpcurl and curl commands work as printed, through Envoy", async (t) => {
  const { plan, envoy } = mesh;
  const { banner } = mesh.launch;
  t.true(banner.includes(`127.0.0.1:${envoy.port}`), banner);
  for (const address of Object.values(plan.addresses).flat()) t.true(banner.includes(address));
  const commands = banner
    .split("\n")
    .map((entry) => entry.trim())
    .filter((entry) => /^(\S*grpcurl|curl) /.test(entry));
  t.true(commands.length >= 7, banner);
  t.true(commands.some((command) => /curl -s .*https:\S+\/users\/usr_/.test(command)));
  t.true(commands.some((command) => /curl -s .*https:\S+\/products\/prd_/.test(command)));
  t.true(commands.some((command) => /-X POST \S+\/orders /.test(command)));
  t.true(commands.some((command) => command.endsWith(`${mesh.front()} list`)));

  // As a user would: the banner's export lines first, then the command.
  const exports = banner
    .split("\n")
    .map((entry) => entry.trim())
    .filter((entry) => entry.startsWith("export "));
  t.deepEqual(
    exports.map((entry) => entry.split("=")[0]),
    ["export TOKEN", "export ADMIN_TOKEN"],
  );
  const shell = (command: string) =>
    exec("sh", ["-c", [...exports, command].join("\n")], { cwd: repoRoot });
  for (const command of commands) {
    const result = await shell(command);
    t.is(result.code, 0, `${command}\n${result.stderr}`);
    t.not(result.stdout.trim(), "", command);
    if (command.includes("| grep")) continue;
    if (command.endsWith(" list")) {
      // Envoy lists the public API; a replica, what it serves.
      const expected = command.endsWith(`${mesh.front()} list`)
        ? "shop.order.v1.OrderService"
        : "shop.user.v1.UserService";
      t.true(result.stdout.includes(expected), result.stdout);
      continue;
    }
    const body = JSON.parse(result.stdout) as Record<string, unknown>;
    t.is(body.code, undefined, `${command} answered an error: ${result.stdout}`);
  }
  const posted = commands.find((command) => command.includes("-X POST"));
  const order = JSON.parse((await shell(posted as string)).stdout);
  t.is(order.order.state, "ORDER_STATE_CONFIRMED");
});

test.serial(
  "generated clients and grpcurl calls through Envoy land on both replicas of each service",
  async (t) => {
    await mesh.waitHealthy(registry.names);
    const c = mesh.clients();
    t.teardown(c.close);
    const user = await newUser(c);
    const product = await newProduct(c, 100);
    const { order } = await c.orders.createOrder({
      userId: user.userId,
      lines: [orderLine(product.productId, 1)],
      requestId: tag("spread-order"),
    });
    const orderId = order?.orderId as string;
    const before = await mesh.requestTotals();

    // The generated grpc-js client classes, as ts-proto emits them.
    const tls = credentials.createSsl(CA);
    const users = new UserServiceClient(mesh.front(), tls);
    const products = new ProductServiceClient(mesh.front(), tls);
    const orders = new OrderServiceClient(mesh.front(), tls);
    t.teardown(() => {
      for (const client of [users, products, orders]) client.close();
    });
    const meta = (id: string) => {
      const metadata = withId(id).metadata as Metadata;
      metadata.set("authorization", `Bearer ${ADMIN_TOKEN}`);
      return metadata;
    };
    const generated: Record<Shop, (id: string) => Promise<unknown>> = {
      user: (id) =>
        new Promise((resolve, reject) =>
          users.getUser({ userId: user.userId }, meta(id), callback(resolve, reject)),
        ),
      product: (id) =>
        new Promise((resolve, reject) =>
          products.getProduct(
            { productId: product.productId },
            meta(id),
            callback(resolve, reject),
          ),
        ),
      order: (id) =>
        new Promise((resolve, reject) =>
          orders.getOrder({ orderId }, meta(id), callback(resolve, reject)),
        ),
    };
    const grpcurlCall: Record<Shop, [string, object]> = {
      user: ["shop.user.v1.UserService/GetUser", { user_id: user.userId }],
      product: ["shop.product.v1.ProductService/GetProduct", { product_id: product.productId }],
      order: ["shop.order.v1.OrderService/GetOrder", { order_id: orderId }],
    };
    const callGrpcurl = async (service: Shop, id: string) => {
      const [method, body] = grpcurlCall[service];
      await grpcurl(
        mesh.front(),
        method,
        body,
        ["-H", `x-request-id: ${id}`],
        ["-cacert", `${CERTS}/ca.crt`],
      );
    };

    for (const service of SHOP) {
      const replicas = [...mesh.plan.addresses[service]].sort();
      const viaGenerated = await mesh.untilEveryReplica(service, tag(`gen-${service}`), (id) =>
        generated[service](id),
      );
      t.deepEqual([...viaGenerated].sort(), replicas, `generated ${service} client`);
      const viaGrpcurl = await mesh.untilEveryReplica(service, tag(`cli-${service}`), (id) =>
        callGrpcurl(service, id),
      );
      t.deepEqual([...viaGrpcurl].sort(), replicas, `grpcurl ${service}`);
    }

    // Envoy's own per-host counters agree: every replica of every cluster served calls.
    const after = await mesh.requestTotals();
    for (const service of SHOP) {
      for (const address of mesh.plan.addresses[service]) {
        const key = `${service} ${address}`;
        t.true((after[key] ?? 0) > (before[key] ?? 0), `${key}: rq_total did not move`);
      }
    }
  },
);

test.serial(
  "REST through Envoy: GET matches the gRPC call, POST /orders creates an order, unknown ids are 404",
  async (t) => {
    await mesh.waitHealthy(registry.names);
    const c = mesh.clients();
    t.teardown(c.close);
    const user = await newUser(c);
    const product = await newProduct(c, 20);
    const http = `https://${mesh.front()}`;
    const admin = { authorization: `Bearer ${ADMIN_TOKEN}` };
    const owner = { authorization: `Bearer ${await tokenFor(user.userId)}` };

    const rest = await edgeFetch(`${http}/users/${user.userId}`, { headers: owner });
    t.is(rest.status, 200);
    t.regex(rest.headers.get("content-type") ?? "", /^application\/json/);
    const restUser = ((await rest.json()) as { user: Record<string, string> }).user;
    const grpcUser = (await c.users.getUser({ userId: user.userId })).user as User;
    t.deepEqual(
      {
        ...restUser,
        create_time: Date.parse(restUser.create_time as string),
        update_time: Date.parse(restUser.update_time as string),
      },
      {
        user_id: grpcUser.userId,
        email: grpcUser.email,
        display_name: grpcUser.displayName,
        create_time: grpcUser.createTime?.getTime(),
        update_time: grpcUser.updateTime?.getTime(),
      },
    );

    // Open: no token.
    const restProduct = (await (
      await edgeFetch(`${http}/products/${product.productId}`)
    ).json()) as {
      product: { product_id: string; name: string; stock_quantity: number; price: object };
    };
    const grpcProduct = (await c.products.getProduct({ productId: product.productId }))
      .product as Product;
    t.like(restProduct.product, {
      product_id: grpcProduct.productId,
      name: grpcProduct.name,
      stock_quantity: grpcProduct.stockQuantity,
      price: { currency_code: "EUR", amount_minor: "1250" },
    });

    const body = {
      user_id: user.userId,
      lines: [{ product_id: product.productId, quantity: 2 }],
      request_id: tag("rest-order"),
    };
    const post = () =>
      edgeFetch(`${http}/orders`, {
        method: "POST",
        headers: { "content-type": "application/json", ...owner },
        body: JSON.stringify(body),
      });
    const created = await post();
    t.is(created.status, 200);
    const { order } = (await created.json()) as {
      order: { order_id: string; state: string; user_id: string; total: object };
    };
    t.like(order, {
      user_id: user.userId,
      state: "ORDER_STATE_CONFIRMED",
      total: { currency_code: "EUR", amount_minor: "2500" },
    });
    const stored = (await c.orders.getOrder({ orderId: order.order_id })).order;
    t.is(stored?.state, OrderState.ORDER_STATE_CONFIRMED);
    t.deepEqual(
      stored?.lines.map((l) => [l.productId, l.quantity]),
      [[product.productId, 2]],
    );
    // The same request_id again: the same order, no second one.
    const again = (await (await post()).json()) as { order: { order_id: string } };
    t.is(again.order.order_id, order.order_id);
    t.is(
      (await c.products.getProduct({ productId: product.productId })).product?.stockQuantity,
      18,
    );

    for (const [urlPath, reason] of [
      ["/users/usr_missing", "USER_NOT_FOUND"],
      ["/products/prd_missing", "PRODUCT_NOT_FOUND"],
      ["/orders/ord_missing", "ORDER_NOT_FOUND"],
    ] as const) {
      const missing = await edgeFetch(`${http}${urlPath}`, { headers: admin });
      t.is(missing.status, 404, urlPath);
      const status = (await missing.json()) as { code: number; details: { reason?: string }[] };
      t.is(status.code, Code.NOT_FOUND, urlPath);
      t.is(status.details.find((detail) => detail.reason)?.reason, reason, urlPath);
    }
  },
);

/** gRPC-Web frames: 1 flag byte (0x80 = trailers), a 4-byte big-endian length, the payload. */
function grpcWebFrames(body: Buffer): { trailer: boolean; payload: Buffer }[] {
  const frames: { trailer: boolean; payload: Buffer }[] = [];
  let offset = 0;
  while (offset < body.length) {
    if (body.length - offset < 5) throw new Error(`truncated frame header at ${offset}`);
    const flags = body[offset] as number;
    const length = body.readUInt32BE(offset + 1);
    if (offset + 5 + length > body.length) throw new Error(`truncated frame at ${offset}`);
    frames.push({
      trailer: (flags & 0x80) !== 0,
      payload: body.subarray(offset + 5, offset + 5 + length),
    });
    offset += 5 + length;
  }
  return frames;
}

const trailerMap = (payload: Buffer) =>
  Object.fromEntries(
    payload
      .toString("latin1")
      .split("\r\n")
      .filter(Boolean)
      .map((entry) => {
        const colon = entry.indexOf(":");
        return [entry.slice(0, colon).trim().toLowerCase(), entry.slice(colon + 1).trim()];
      }),
  );

test.serial("a hand-built gRPC-Web request gets a well-formed gRPC-Web response", async (t) => {
  await mesh.waitHealthy(["user"]);
  const c = mesh.clients();
  t.teardown(c.close);
  const user = await newUser(c);

  const call = async (userId: string, requestId: string) => {
    const message = Buffer.from(GetUserRequest.encode({ userId }).finish());
    const response = await edgeFetch(`https://${mesh.front()}/shop.user.v1.UserService/GetUser`, {
      method: "POST",
      headers: {
        authorization: `Bearer ${ADMIN_TOKEN}`,
        "content-type": "application/grpc-web+proto",
        accept: "application/grpc-web+proto",
        "x-grpc-web": "1",
        "x-request-id": requestId,
      },
      body: grpcFrame(message),
    });
    return { response, body: Buffer.from(await response.arrayBuffer()) };
  };

  const id = tag("grpc-web");
  const ok = await call(user.userId, id);
  t.is(ok.response.status, 200);
  t.is(ok.response.headers.get("content-type"), "application/grpc-web+proto");
  const frames = grpcWebFrames(ok.body);
  t.deepEqual(
    frames.map((frame) => frame.trailer),
    [false, true],
    "one message frame, then one trailer frame",
  );
  const reply = GetUserResponse.decode((frames[0] as { payload: Buffer }).payload);
  t.is(reply.user?.userId, user.userId);
  t.is(reply.user?.email, user.email);
  t.is(trailerMap((frames[1] as { payload: Buffer }).payload)["grpc-status"], "0");
  const [logged] = await mesh.loggedRequests(id, 1);
  t.like(logged, { upstream_cluster: "user", protocol: "HTTP/1.1", response_code: 200 });

  // An error is trailers only: grpc-status in the headers or in a lone trailer frame.
  const missing = await call("usr_missing", tag("grpc-web-missing"));
  t.is(missing.response.status, 200);
  const errorFrames = grpcWebFrames(missing.body);
  t.false(
    errorFrames.some((frame) => !frame.trailer),
    "no message frame on an error",
  );
  const trailers = {
    ...Object.fromEntries(missing.response.headers),
    ...(errorFrames[0] ? trailerMap(errorFrames[0].payload) : {}),
  };
  t.is(trailers["grpc-status"], String(Code.NOT_FOUND));
  t.regex(decodeURIComponent(trailers["grpc-message"] ?? ""), /usr_missing/);
});
