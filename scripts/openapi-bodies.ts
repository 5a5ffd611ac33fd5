// Fixes what protoc-gen-openapiv2 gets wrong in the bodies it describes (run by generate.sh):
// - with `body: "product"`, it lists `product` itself among the body's required properties,
//   though the body *is* the product (grpc-gateway#6088, after the version we pin);
// - with an update_mask, it still requires the resource's REQUIRED fields, though a partial
//   update names the fields it sets and leaves out the others (AIP-134, AIP-203);
// - a server stream's reply is grpc-gateway's, one {"result": …} or {"error": …} object per
//   message; Envoy's transcoder sends a JSON array of the messages, its end in the trailers.
//
//   tsx scripts/openapi-bodies.ts docs/api/openapi/shopmesh.swagger.yaml
import { readFileSync, writeFileSync } from "node:fs";
import { isMap, isSeq, parseDocument, type YAMLMap } from "yaml";

const [file] = process.argv.slice(2);
if (!file) throw new Error("usage: openapi-bodies.ts FILE");
const doc = parseDocument(readFileSync(file, "utf8"));

const paths = doc.get("paths") as YAMLMap<string, YAMLMap<string, YAMLMap>>;
for (const path of paths.items) {
  for (const operation of (path.value as YAMLMap<string, YAMLMap>).items) {
    const parameters = operation.value?.get("parameters");
    if (!isSeq(parameters)) continue;
    const partial = parameters.items.some(
      (parameter) => isMap(parameter) && parameter.get("name") === "update_mask",
    );
    for (const parameter of parameters.items) {
      if (!isMap(parameter) || parameter.get("in") !== "body") continue;
      const schema = parameter.get("schema");
      if (!isMap(schema)) continue;
      const required = schema.get("required");
      if (!isSeq(required)) continue;
      const properties = schema.get("properties");
      const kept = required.items.filter(
        (name) => !partial && isMap(properties) && properties.has(String(name)),
      );
      if (kept.length === 0) schema.delete("required");
      else required.items = kept;
    }
  }
}
for (const path of paths.items) {
  for (const operation of (path.value as YAMLMap<string, YAMLMap>).items) {
    const ok = operation.value?.getIn(["responses", "200"]);
    const schema = isMap(ok) ? ok.get("schema") : undefined;
    const title = isMap(schema) ? String(schema.get("title") ?? "") : "";
    if (!isMap(ok) || !title.startsWith("Stream result of ")) continue;
    const message = title.slice("Stream result of ".length);
    ok.set(
      "description",
      "The messages of the stream, as a JSON array (its status in the trailers).",
    );
    ok.set(
      "schema",
      doc.createNode({ type: "array", items: { $ref: `#/definitions/${message}` } }),
    );
  }
}
writeFileSync(file, doc.toString({ lineWidth: 0 }));
