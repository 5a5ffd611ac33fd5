// The first HTTP filter (lua/edge.lua): the caller's protocol and status for the access log, and
// REST requests checked against the contract.

import { type DescMessage, getExtension, hasExtension } from "@bufbuild/protobuf";
import { contractRegistry } from "../../kit/contract.js";
import { PAGE_BYTES_KEY } from "../../kit/page-token.js";
import {
  CONNECT_PAGE_BYTES,
  connectCodecRefusal,
  connectGetBodyRefusal,
  connectGetPaths,
  connectGetRefusal,
  connectGetRepeatRefusal,
  connectMessageRefusal,
  connectQueryRefusal,
  connectRpcPaths,
  connectStreamPaths,
  connectTimeoutRefusal,
  connectUnaryOnStreamRefusal,
  grpcWebCodecRefusal,
} from "./connect.js";
import { CORS_EXPOSE_HEADERS } from "./cors.js";
import { bindingsOf, type HttpRule, luaPatternOf, variablesOf } from "./http-rules.js";
import { lua } from "./lua.js";
import { headerMatches, skippedFor } from "./matchers.js";
import { REST_PAGE_BYTES } from "./rest.js";
import type { GrpcService } from "./topology.js";

/**
 * Set by edgeProtocols on every request that is not native gRPC, to the caller's protocol, and
 * removed by healthByName: it tells healthByName, behind the bridges that made every request
 * gRPC, which requests came in as something else.
 */
export const EDGE_PROTOCOL_HEADER = "x-shopmesh-edge-protocol";

/**
 * A native gRPC request, by its content type as the transcoder reads it: exactly
 * application/grpc, or application/grpc+<codec>. Any other (application/grpc; charset=utf-8) is
 * transcoded on a REST route, so the edge's REST checks must see it.
 */
const NATIVE_GRPC = {
  or_matcher: {
    predicate: [
      headerMatches("content-type", { exact: "application/grpc" }),
      headerMatches("content-type", { prefix: "application/grpc+" }),
    ],
  },
};

/** A JSON key of a field, for edge.lua: the field's name, and the message it holds or false. */
interface FieldEntry {
  name: string;
  message: string | false;
  /** A repeated field: its JSON value is a list. */
  list?: true;
}

/**
 * The caller's protocol and status, and REST requests checked against the contract: the first
 * filter (lua/edge.lua). It refuses a REST body with a field its message lacks or one it sets
 * twice, and a query parameter for a field the path or the body sets (INVALID_ARGUMENT), and
 * strips grpc-* headers from REST and Connect replies.
 */
export function edgeProtocols(services: readonly GrpcService[], corsOrigins: readonly string[]) {
  const registry = contractRegistry();
  const http = registry.getExtension("google.api.http");
  if (!http) throw new Error("google.api.http is not in the descriptor set");
  const bodies: {
    method: string;
    pattern: string;
    message: string;
    /** Fields of the body's message the path sets too, each by its capture in `capture`. */
    bound?: {
      capture: string;
      fields: { name: string; json: string; index: number }[];
      keys: Record<string, true>;
    };
  }[] = [];
  const queries: {
    method: string;
    pattern: string;
    taken: string[];
    body: string;
    repeated: Record<string, true>;
    /** The request message, whose fields a query parameter names. */
    message: string;
  }[] = [];
  const messages: Record<string, Record<string, FieldEntry>> = {};
  const describe = (message: DescMessage) => {
    if (messages[message.typeName] || message.file.proto.package.startsWith("google.")) return;
    const fields: Record<string, FieldEntry> = {};
    messages[message.typeName] = fields;
    for (const field of message.fields) {
      const inner =
        field.fieldKind === "message" || field.fieldKind === "list" ? field.message : undefined;
      const entry: FieldEntry = {
        name: field.name,
        message: inner ? inner.typeName : false,
        ...(field.fieldKind === "list" && { list: true }),
      };
      fields[field.name] = entry;
      fields[field.jsonName] = entry;
      if (inner) describe(inner);
    }
  };
  for (const service of services) {
    for (const method of registry.getService(service.fullName)?.methods ?? []) {
      const options = method.proto.options;
      if (!options || !hasExtension(options, http)) continue;
      for (const { verb, template, body } of bindingsOf(getExtension(options, http) as HttpRule)) {
        const pattern = luaPatternOf(template);
        // Fields the path or the body sets, by each name a query parameter may give them.
        const taken = [...variablesOf(template), ...(body && body !== "*" ? [body] : [])];
        describe(method.input);
        queries.push({
          method: verb,
          pattern,
          taken: [
            ...new Set(
              taken.flatMap((name) => [
                name,
                name.replace(/_([a-z])/g, (_, c: string) => c.toUpperCase()),
              ]),
            ),
          ],
          body,
          // The fields a query may give more than once: repeated scalars, by their proto names.
          repeated: Object.fromEntries(
            method.input.fields
              .filter((field) => field.fieldKind === "list" && field.listKind !== "message")
              .map((field) => [field.name, true]),
          ),
          message: method.input.typeName,
        });
        if (!body) continue;
        const message =
          body === "*"
            ? method.input
            : method.input.fields.find((field) => field.name === body)?.message;
        if (!message) continue;
        describe(message);
        // A field the path sets, named in the body too: the transcoder keeps the path's value
        // silently under the JSON name (and under the proto name, in some requests).
        const prefix = body === "*" ? "" : `${body}.`;
        const fields = variablesOf(template).flatMap((variable, index) => {
          const name = variable.startsWith(prefix) ? variable.slice(prefix.length) : "";
          const field = message.fields.find((f) => f.name === name);
          return field ? [{ name: field.name, json: field.jsonName, index: index + 1 }] : [];
        });
        bodies.push({
          method: verb,
          pattern,
          message: message.typeName,
          ...(fields.length > 0 && {
            bound: {
              capture: luaPatternOf(template, { capture: true }),
              fields,
              // Both names of each, the keys edge.lua reads from the body.
              keys: Object.fromEntries(
                fields.flatMap((f) => [f.name, f.json]).map((k) => [k, true]),
              ),
            },
          }),
        });
      }
    }
  }
  // Native gRPC needs none of it: the access log reads its protocol and status from Envoy.
  return skippedFor(
    NATIVE_GRPC,
    lua("edge.lua", {
      REST_BODIES: bodies,
      REST_QUERIES: queries,
      MESSAGES: messages,
      CONNECT_GET: connectGetPaths(services),
      CONNECT_RPCS: connectRpcPaths(services),
      CONNECT_STREAMS: connectStreamPaths(services),
      CONNECT_UNARY_ON_STREAM_REFUSAL: connectUnaryOnStreamRefusal(),
      CONNECT_GET_BODY_REFUSAL: connectGetBodyRefusal(),
      CONNECT_GET_REFUSAL: connectGetRefusal(),
      CONNECT_GET_REPEAT_REFUSAL: connectGetRepeatRefusal(),
      CONNECT_CODEC_REFUSAL: connectCodecRefusal(),
      CONNECT_QUERY_REFUSAL: connectQueryRefusal(),
      CONNECT_TIMEOUT_REFUSAL: connectTimeoutRefusal(),
      CONNECT_MESSAGE_REFUSAL: connectMessageRefusal(),
      GRPC_WEB_CODEC_REFUSAL: grpcWebCodecRefusal(),
      CORS_ORIGINS: Object.fromEntries(corsOrigins.map((origin) => [origin, true])),
      CORS_EXPOSE_HEADERS: CORS_EXPOSE_HEADERS.join(","),
      EDGE_PROTOCOL_HEADER,
      PAGE_BYTES_KEY,
      REST_PAGE_BYTES: String(REST_PAGE_BYTES),
      CONNECT_PAGE_BYTES: Object.fromEntries(
        Object.entries(CONNECT_PAGE_BYTES).map(([version, bytes]) => [version, String(bytes)]),
      ),
      CONNECT_SMALLEST_PAGE_BYTES: String(Math.min(...Object.values(CONNECT_PAGE_BYTES))),
    }),
  );
}
