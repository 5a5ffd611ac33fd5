// Credentials for tests: the development set `npm run certs` makes (made once, whichever test
// file asks first), tokens signed with its key, and client middleware that signs every call in
// as a caller who may make it: an admin, except CreateOrder, placed by the user it names.
//
//   const token = await tokenFor("usr_1");                 // a user's token, no roles
//   createClient(OrderServiceService, address, { middleware: testCallers() });
//   grpcurl -H `authorization: Bearer ${ADMIN_TOKEN}`
import { Metadata as GrpcMetadata, type Metadata } from "@grpc/grpc-js";
import { defaultClientMiddleware } from "../../kit/middleware/index.js";
import type { ClientMiddleware } from "../../kit/middleware/types.js";
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
