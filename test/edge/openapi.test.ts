// The REST API as docs/api/openapi describes it, called through the edge (`npm run mesh`, real
// Envoy and replicas): a request built from an operation's documented parameters alone works, and
// a reply is what the document says.
import { readFileSync } from "node:fs";
import path from "node:path";
import test from "ava";
import { parse } from "yaml";
import { repoRoot } from "../../scripts/lib/launcher.js";
import { ADMIN_TOKEN, edgeFetch } from "../helpers/credentials.js";
import { newProduct, newUser, tag, useMesh } from "../helpers/front-door.js";

const mesh = useMesh();

interface Parameter {
  name: string;
  in: "path" | "query" | "body";
  required?: boolean;
  schema?: { properties?: Record<string, unknown>; required?: string[] };
}
interface Operation {
  operationId: string;
  parameters: Parameter[];
}
/** A server stream's operation: its reply, an array of messages. */
interface Streamed {
  responses: { "200": { schema: { type: string; items: { $ref: string } } } };
}
const spec = parse(
  readFileSync(path.join(repoRoot, "docs", "api", "openapi", "shopmesh.swagger.yaml"), "utf8"),
) as { paths: Record<string, Record<string, Operation>> };

test.serial("REST: a PATCH built from the OpenAPI's parameters updates the field", async (t) => {
  await mesh.waitHealthy(["user", "product"]);
  const c = mesh.clients();
  const [user, product] = await Promise.all([newUser(c), newProduct(c, 1)]);
  c.close();
  // What each PATCH operation changes: the resource and a body naming one field.
  const changes: Record<string, { id: string; body: Record<string, string> }> = {
    ProductService_UpdateProduct: { id: product.productId, body: { name: tag("renamed") } },
    UserService_UpdateUser: { id: user.userId, body: { display_name: tag("renamed") } },
  };
  const patched: string[] = [];
  for (const [template, operations] of Object.entries(spec.paths)) {
    const operation = operations.patch;
    if (!operation) continue;
    const change = changes[operation.operationId];
    if (!change) {
      t.fail(`${operation.operationId}: a PATCH this test does not know`);
      continue;
    }
    // A required query parameter of a PATCH is its update mask: the fields the body sets.
    const query = operation.parameters
      .filter((parameter) => parameter.in === "query" && parameter.required)
      .map((parameter) => `${parameter.name}=${Object.keys(change.body).join(",")}`)
      .join("&");
    const url = `https://${mesh.front()}${template.replace(/\{[^}]+\}/, change.id)}${query ? `?${query}` : ""}`;
    const response = await edgeFetch(url, {
      method: "PATCH",
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: JSON.stringify(change.body),
    });
    const text = await response.text();
    t.is(response.status, 200, `${operation.operationId}: ${text}`);
    const [field, value] = Object.entries(change.body)[0] as [string, string];
    const resource = Object.values(JSON.parse(text))[0] as Record<string, unknown> | undefined;
    t.is(resource?.[field], value, operation.operationId);
    patched.push(operation.operationId);
  }
  t.deepEqual(patched.sort(), Object.keys(changes).sort());
});

test("every body the OpenAPI describes requires only properties it has, and a PATCH none", (t) => {
  let bodies = 0;
  for (const [template, operations] of Object.entries(spec.paths)) {
    for (const [method, operation] of Object.entries(operations)) {
      const partial = operation.parameters.some((parameter) => parameter.name === "update_mask");
      for (const parameter of operation.parameters.filter((p) => p.in === "body")) {
        bodies++;
        const required = parameter.schema?.required ?? [];
        const where = `${method.toUpperCase()} ${template}`;
        // A client generated from the spec sends what it requires: a key the body lacks is
        // refused as UNKNOWN_FIELD, and a partial update names its fields in update_mask.
        for (const name of required)
          t.truthy(parameter.schema?.properties?.[name], `${where}: ${name}`);
        if (partial) t.deepEqual(required, [], where);
      }
    }
  }
  t.true(bodies > 0);
});

test.serial(
  "REST: a WatchOrder reply is the JSON array of messages the OpenAPI describes",
  async (t) => {
    await mesh.waitHealthy(["user", "product", "order"]);
    const c = mesh.clients();
    const [user, product] = await Promise.all([newUser(c), newProduct(c, 1)]);
    const { order } = await c.orders.createOrder({
      userId: user.userId,
      lines: [{ productId: product.productId, quantity: 1, unitPrice: undefined }],
      requestId: tag("watch"),
    });
    await c.orders.cancelOrder({ orderId: order?.orderId ?? "" });
    c.close();
    const template = "/orders/{order_id}:watch";
    const watch = spec.paths[template]?.get as unknown as Streamed | undefined;
    const ok = watch?.responses["200"];
    if (!ok) return t.fail(`no 200 reply for GET ${template}`);
    t.is(ok.schema.type, "array");
    const item = ok.schema.items.$ref.replace("#/definitions/", "");
    // A cancelled order ends its watch: the stream's messages come whole.
    const response = await edgeFetch(
      `https://${mesh.front()}${template.replace("{order_id}", order?.orderId ?? "")}`,
      { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } },
    );
    t.is(response.status, 200);
    const messages = (await response.json()) as Record<string, { state: string }>[];
    t.true(Array.isArray(messages), item);
    t.is(messages.at(-1)?.order?.state, "ORDER_STATE_CANCELLED", item);
    for (const message of messages) t.deepEqual(Object.keys(message), ["order"], item);
  },
);
