// Credentials for tests: the development set `npm run certs` makes (made once, whichever test
// file asks first), tokens signed with its key, and client middleware that signs every call in
// as a caller who may make it: an admin, except CreateOrder, placed by the user it names.
//
//   const token = await tokenFor("usr_1");                 // a user's token, no roles
//   createClient(OrderServiceService, address, { middleware: testCallers() });
//   grpcurl -H `authorization: Bearer ${ADMIN_TOKEN}`
import { readFileSync } from "node:fs";
import { request as httpsRequest } from "node:https";
import {
  Metadata as GrpcMetadata,
  credentials as grpcCredentials,
  type Metadata,
} from "@grpc/grpc-js";
import { createClient } from "../../kit/client/index.js";
import type { ServiceDefinition } from "../../kit/contract.js";
import { defaultClientMiddleware } from "../../kit/middleware/index.js";
import type { ClientMiddleware } from "../../kit/middleware/types.js";
import { DEV_AUDIENCE, DEV_ISSUER, type SecurityConfig } from "../../kit/security/security.js";
import { channelCredentials, readTls } from "../../kit/security/tls.js";
import { ensureDevCredentials, identityFiles, signToken } from "../../scripts/lib/credentials.js";

/** The development credentials folder (.certs/), made if missing. */
export const CERTS = await ensureDevCredentials();

/** The subject of the tests' admin: not a user record, just a caller with role admin. */
export const ADMIN_ID = "usr_test_admin";
export const ADMIN_TOKEN = await signToken({
  user: ADMIN_ID,
  roles: ["admin"],
  ttlSeconds: 6 * 3600,
});

const tokens = new Map<string, Promise<string>>();

/** A token for `userId` (no roles), valid for hours; one per user per test process. */
export function tokenFor(userId: string): Promise<string> {
  let token = tokens.get(userId);
  if (!token) {
    token = signToken({ user: userId, ttlSeconds: 6 * 3600 });
    tokens.set(userId, token);
  }
  return token;
}

/** `authorization: Bearer <token>` as a header line for grpcurl -H or curl -H. */
export const authHeader = (token: string) => `authorization: Bearer ${token}`;

/** The files of a mesh identity in the development set, e.g. cli. */
export const identity = (name: string) => identityFiles(CERTS, name);

const setAuth = (metadata: Metadata, token: string) => {
  if (metadata.get("authorization").length === 0) metadata.set("authorization", `Bearer ${token}`);
};

/**
 * Signs each call in as a caller allowed to make it: the admin, or for CreateOrder the user it
 * names (a user places only their own orders). A call that sets its own authorization keeps it.
 */
export const asAllowedCaller: ClientMiddleware = {
  name: "test-caller",
  wrap: (method, next) =>
    method.rpc === "CreateOrder"
      ? (request, call) => {
          const userId = (request as { userId?: unknown }).userId;
          // An id no user could have (empty, oversized) is refused by validation first.
          if (typeof userId !== "string" || userId === "" || userId.length > 64) {
            setAuth(call.metadata, ADMIN_TOKEN);
            return next(request, call);
          }
          return tokenFor(userId).then((token) => {
            setAuth(call.metadata, token);
            return next(request, call) as Promise<unknown>;
          });
        }
      : (request, call) => {
          setAuth(call.metadata, ADMIN_TOKEN);
          return next(request, call);
        },
};

/** The kit's client chain plus asAllowedCaller: what test clients use. */
export const testCallers = (defaultTimeoutMs = 10_000): ClientMiddleware[] => [
  ...defaultClientMiddleware({ defaultTimeoutMs }),
  asAllowedCaller,
];

/** Metadata signed in as the tests' admin, for raw grpc-js calls. */
export function adminMetadata(): Metadata {
  const metadata = new GrpcMetadata();
  metadata.set("authorization", `Bearer ${ADMIN_TOKEN}`);
  return metadata;
}

/** The development CA, which Envoy's listener certificate chains to. */
export const CA = readFileSync(`${CERTS}/ca.crt`);

/** grpc-js credentials for Envoy's TLS listener: the development CA, no client certificate. */
export const edgeTransport = () => ({
  credentials: grpcCredentials.createSsl(CA),
  // The edge certificate names localhost too: checked by name, not by the IP dialled.
  options: { "grpc.ssl_target_name_override": "localhost" },
});

/** grpc-js credentials of a mesh identity (mutual TLS), checking the server is `expect`. */
export const meshTransport = (name: string, expect?: string) =>
  channelCredentials(readTls(identity(name)), expect);

/**
 * fetch() for Envoy's TLS listener, which Node's fetch cannot be told to trust: an HTTPS request
 * (HTTP/1.1) with the development CA, answered as a standard Response.
 */
export function edgeFetch(
  url: string,
  init: { method?: string; headers?: Record<string, string>; body?: string | Uint8Array } = {},
): Promise<Response> {
  return new Promise((resolve, reject) => {
    const request = httpsRequest(
      url,
      { method: init.method ?? "GET", headers: init.headers, ca: CA, timeout: 15_000 },
      (response) => {
        const chunks: Buffer[] = [];
        response.on("data", (chunk: Buffer) => chunks.push(chunk));
        response.on("error", reject);
        response.on("end", () => {
          const headers = new Headers();
          for (const [name, value] of Object.entries(response.headers)) {
            for (const one of ([] as string[]).concat(value ?? [])) headers.append(name, one);
          }
          const status = response.statusCode ?? 0;
          const empty = status === 204 || status === 304;
          resolve(new Response(empty ? null : Buffer.concat(chunks), { status, headers }));
        });
      },
    );
    request.on("timeout", () => request.destroy(new Error(`${url}: no answer within 15 s`)));
    request.on("error", reject);
    request.end(init.body);
  });
}

/** The security settings of a mesh replica of `service`: its identity, the development JWKS. */
export function meshSecurity(service: string): SecurityConfig {
  return {
    profile: "development",
    tls: readTls(identity(service)),
    jwt: {
      jwks: JSON.parse(readFileSync(`${CERTS}/jwks.json`, "utf8")),
      issuer: DEV_ISSUER,
      audience: DEV_AUDIENCE,
    },
  };
}

/** A client of `definition` at `address` whose calls sign in as testCallers does. */
export const signedInClient = <S extends ServiceDefinition>(definition: S, address: string) =>
  createClient(definition, address, { middleware: testCallers() });
