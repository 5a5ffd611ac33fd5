// Connect's GET requests at the edge (`npm run mesh`, real Envoy and replicas): the Connect
// protocol lets a client send an rpc as an HTTP GET only when the rpc is unary and declares
// `idempotency_level = NO_SIDE_EFFECTS`. Any other rpc sent as a GET is refused with 405 before
// it reaches a service, so a link, a prefetch or a cache replaying a URL never places an order.
import test from "ava";
import { ErrorInfo } from "../../gen/ts/google/rpc/error_details.js";
import {
  CancelOrderRequest,
  CreateOrderRequest,
  WatchOrderRequest,
} from "../../gen/ts/shop/order/v1/order.js";
import { GetProductRequest } from "../../gen/ts/shop/product/v1/product.js";
import { edgeFetch, tokenFor } from "../helpers/credentials.js";
import { newProduct, newUser, tag, useMesh } from "../helpers/front-door.js";

const mesh = useMesh();

/** A Connect GET URL for `method` carrying `message` (proto, base64url), as connect-web builds it. */
const getUrl = (method: string, message: Uint8Array) =>
  `https://${mesh.front()}/${method}?connect=v1&encoding=proto&base64=1&message=${Buffer.from(message).toString("base64url")}`;

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
