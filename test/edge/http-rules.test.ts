// The edge's Lua filter checks REST requests against every binding the transcoder serves: the
// rule's own and its additional_bindings, with templates of any shape.
import test from "ava";
import { bindingsOf, luaPatternOf, variablesOf } from "../../deploy/envoy/http-rules.js";

test("every binding of a rule is one the edge checks", (t) => {
  const rule = {
    pattern: { case: "get", value: "/skus/{sku}" },
    body: "",
    additionalBindings: [
      { pattern: { case: "get", value: "/catalogue/skus/{sku}" }, body: "" },
      { pattern: { case: "custom", value: { kind: "head", path: "/skus/{sku}" } }, body: "" },
      { pattern: { case: "post", value: "/skus:lookup" }, body: "*", responseBody: "sku" },
    ],
  };
  t.deepEqual(bindingsOf(rule), [
    { verb: "GET", template: "/skus/{sku}", body: "", responseBody: "" },
    { verb: "GET", template: "/catalogue/skus/{sku}", body: "", responseBody: "" },
    { verb: "HEAD", template: "/skus/{sku}", body: "", responseBody: "" },
    { verb: "POST", template: "/skus:lookup", body: "*", responseBody: "sku" },
  ]);
  t.deepEqual(bindingsOf({ pattern: {}, body: "" }), []);
});

test("a template's Lua pattern matches the paths the transcoder routes to it", (t) => {
  t.is(luaPatternOf("/users/{user_id}"), "^/users/[^/]+/?$");
  t.is(luaPatternOf("/orders/{order_id}:cancel"), "^/orders/[^/]+:cancel/?$");
  t.is(luaPatternOf("/v1/{name=reviews/*}"), "^/v1/reviews/[^/]+/?$");
  t.is(luaPatternOf("/v1/{name=shelves/*/books/*}"), "^/v1/shelves/[^/]+/books/[^/]+/?$");
  t.is(luaPatternOf("/files/{path=**}"), "^/files/.+/?$");
  t.is(luaPatternOf("/v1/*/{id}"), "^/v1/[^/]+/[^/]+/?$");
  // Lua's magic characters in a literal match only themselves.
  t.is(luaPatternOf("/a.b-c+d/{id}"), "^/a%.b%-c%+d/[^/]+/?$");
  t.deepEqual(variablesOf("/v1/{name=shelves/*}/x/{book.id}"), ["name", "book.id"]);
});
