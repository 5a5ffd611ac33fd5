// The storefront page: lists the catalogue, shows a product and places an order, over the Connect
// protocol through Envoy, with the clients protoc-gen-es generated from proto/ (gen/es).
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import {
  ErrorInfoSchema,
  PreconditionFailureSchema,
} from "../../../gen/es/google/rpc/error_details_pb.js";
import { OrderService, OrderState } from "../../../gen/es/shop/order/v1/order_pb.js";
import { type Product, ProductService } from "../../../gen/es/shop/product/v1/product_pb.js";
import type { Money } from "../../../gen/es/shop/type/v1/money_pb.js";

// Envoy's address, from ?edge=…; the page's own origin must be in SHOP_CORS_ORIGINS.
const edge = new URLSearchParams(location.search).get("edge") ?? "https://localhost:8080";
// The services speak protobuf, so the transport sends it: Envoy refuses Connect in JSON.
const transport = createConnectTransport({ baseUrl: edge, useBinaryFormat: true });
const products = createClient(ProductService, transport);
const orders = createClient(OrderService, transport);

const element = <T extends HTMLElement = HTMLElement>(id: string) =>
  document.getElementById(id) as T;

/** The signed-in user: the bearer token typed in, and its subject. */
function signedIn() {
  const token = element<HTMLInputElement>("token").value.trim();
  const payload = token.split(".")[1] ?? "";
  const claims = JSON.parse(atob(payload.replace(/-/g, "+").replace(/_/g, "/")) || "{}");
  return { headers: { authorization: `Bearer ${token}` }, userId: String(claims.sub ?? "") };
}

function price(money: Money | undefined): string {
  if (!money) return "";
  const format = new Intl.NumberFormat("en", { style: "currency", currency: money.currencyCode });
  const digits = format.resolvedOptions().maximumFractionDigits ?? 2;
  return format.format(Number(money.amountMinor) / 10 ** digits);
}

function say(text: string, error = false) {
  const status = element("status");
  status.textContent = text;
  status.className = error ? "error" : "";
}

/** An error as a person reads it: its code, ErrorInfo reason and each violation. */
function explain(cause: unknown): string {
  const error = ConnectError.from(cause);
  const [info] = error.findDetails(ErrorInfoSchema);
  const violations = error
    .findDetails(PreconditionFailureSchema)
    .flatMap((failure) => failure.violations.map((v) => v.description));
  return [
    `${Code[error.code]}${info ? ` (${info.reason})` : ""}: ${error.rawMessage}`,
    ...violations,
  ].join(" — ");
}

async function showCatalogue() {
  const { products: listed } = await products.listProducts({ pageSize: 50 });
  const list = element("products");
  list.replaceChildren(
    ...listed.map((product) => {
      const item = document.createElement("li");
      item.dataset.productId = product.productId;
      item.textContent = `${product.name} ${price(product.price)}`;
      const view = document.createElement("button");
      view.textContent = "View";
      view.addEventListener("click", () => void showProduct(product.productId).catch(failed));
      item.append(view);
      return item;
    }),
  );
}

let shown: Product | undefined;

async function showProduct(productId: string) {
  const { product } = await products.getProduct({ productId });
  if (!product) return;
  shown = product;
  element("product").hidden = false;
  element("product-name").textContent = product.name;
  element("product-description").textContent = product.description;
  element("product-price").textContent = price(product.price);
  element("product-stock").textContent = String(product.stockQuantity);
}

async function placeOrder() {
  if (!shown) return;
  const { headers, userId } = signedIn();
  const quantity = Number(element<HTMLInputElement>("quantity").value);
  say("placing the order…");
  const { order } = await orders.createOrder(
    {
      userId,
      lines: [{ productId: shown.productId, quantity }],
      requestId: crypto.randomUUID(),
    },
    { headers },
  );
  if (!order) return;
  element("order").hidden = false;
  element("order-id").textContent = order.orderId;
  element("order-state").textContent = OrderState[order.state];
  say("order placed");
  await showProduct(shown.productId);
}

function failed(cause: unknown) {
  say(explain(cause), true);
}

element("edge").textContent = edge;
element("order-button").addEventListener("click", () => void placeOrder().catch(failed));
showCatalogue().catch(failed);
