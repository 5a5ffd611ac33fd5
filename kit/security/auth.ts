// Who is calling and what they may do: the JWT a caller presents (checked with jose against the
// mesh's JWKS), the access rule each rpc declares, and the ownership checks handlers make where
// they read the data. The middleware that applies the rules is middleware/auth.ts.
import {
  createLocalJWKSet,
  type JSONWebKeySet,
  type JWTVerifyGetKey,
  errors as joseErrors,
  jwtVerify,
} from "jose";
import { type CallContext, contextKey } from "../context.js";
import { Code, ServiceError } from "../errors.js";
import { jsonAsTheEdgeReadsIt } from "./token-json.js";

/** The signed-in caller of a call, from its verified token. */
export interface Caller {
  /** The token's subject: the caller's user_id. */
  readonly userId: string;
  readonly roles: readonly string[];
}

/** The caller a verified token names; set by the auth middleware, absent on open calls without one. */
export const CALLER = contextKey<Caller>("caller");

export const ADMIN = "admin";

/** Who may call an rpc. Every rpc of a service module declares one (ServiceModule.access). */
export type AccessRule =
  /** Anyone, without a token; a token that is sent must still be valid. */
  | { readonly kind: "open" }
  /** Any signed-in caller; the handler checks ownership against the data it reads. */
  | { readonly kind: "signedIn" }
  /** A signed-in caller with role "admin". */
  | { readonly kind: "admin" }
  /** Only the named mesh identities (mTLS peer certificates); no token. */
  | { readonly kind: "internal"; readonly callers: readonly string[] };

export const open: AccessRule = { kind: "open" };
export const signedIn: AccessRule = { kind: "signedIn" };
export const adminOnly: AccessRule = { kind: "admin" };
export const internal = (...callers: string[]): AccessRule => ({ kind: "internal", callers });

/** What a token must satisfy: the keys that may sign it, its issuer and audience. */
export interface JwtSettings {
  jwks: JSONWebKeySet;
  issuer: string;
  audience: string;
}

export const unauthenticated = (reason: string, message: string) =>
  new ServiceError(Code.UNAUTHENTICATED, message, { reason });

export const permissionDenied = (reason: string, message: string) =>
  new ServiceError(Code.PERMISSION_DENIED, message, { reason });

/** Longest a verified token is remembered, so a key taken out of the JWKS stops working soon. */
const CACHE_MS = 60_000;
const CACHE_SIZE = 1_000;
/** How far past its `exp` a token is still accepted: the clocks of its issuer and ours may differ. */
const CLOCK_SKEW_S = 30;

/**
 * What Envoy's jwt_authn also requires, so that no token passes one door and not the other: its
 * times (`exp`, `nbf`, `iat`) within what 64 bits of seconds hold, and its `sub` one line of
 * well-formed text, which the edge's `.+` (RE2) matches.
 */
function readAtTheEdge(payload: Record<string, unknown>): boolean {
  const times = [payload.exp, payload.nbf, payload.iat].filter((time) => time !== undefined);
  return (
    times.every((time) => typeof time === "number" && time >= 0 && time < 2 ** 64) &&
    typeof payload.sub === "string" &&
    /^[^\n]+$/.test(payload.sub) &&
    !LONE_SURROGATE.test(payload.sub)
  );
}

/** A UTF-16 surrogate without its pair: text no UTF-8 encoding holds. */
const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/** A token that passed: who it names, and until when a call with it is accepted. */
export interface VerifiedToken {
  readonly caller: Caller;
  /** Ms since the epoch: the token's `exp` plus the clock skew allowed. */
  readonly acceptedUntil: number;
}

/**
 * Verifies bearer tokens: signature (ES256 or RS256, by a key of the JWKS), issuer, audience,
 * expiry (30 s of clock skew), and a non-empty `sub`, read as the edge reads them. Refusals are UNAUTHENTICATED with reason
 * TOKEN_EXPIRED or TOKEN_INVALID. A token verified once is remembered until it expires (a minute
 * at most): a caller sends the same token on every call.
 */
export class TokenVerifier {
  private readonly keys: JWTVerifyGetKey;
  private readonly cache = new Map<string, { verified: VerifiedToken; until: number }>();

  constructor(private readonly settings: JwtSettings) {
    this.keys = createLocalJWKSet(settings.jwks);
    // Import the keys now rather than on the first call, which a restarted replica serves first.
    for (const { alg, kid } of settings.jwks.keys) {
      if (alg) Promise.resolve(this.keys({ alg, kid }, undefined as never)).catch(() => {});
    }
  }

  async verify(token: string): Promise<VerifiedToken> {
    const now = Date.now();
    const hit = this.cache.get(token);
    if (hit && hit.until > now) return hit.verified;
    let payload: Awaited<ReturnType<typeof jwtVerify>>["payload"];
    try {
      ({ payload } = await jwtVerify(token, this.keys, {
        issuer: this.settings.issuer,
        audience: this.settings.audience,
        algorithms: ["ES256", "RS256"],
        requiredClaims: ["sub", "exp"],
        clockTolerance: CLOCK_SKEW_S,
      }));
    } catch (error) {
      // An `exp` the edge cannot read (negative, say) is malformed there before it is past.
      if (error instanceof joseErrors.JWTExpired && readAtTheEdge(error.payload)) {
        throw unauthenticated("TOKEN_EXPIRED", "the token has expired");
      }
      const why = error instanceof joseErrors.JOSEError ? error.code : "malformed";
      throw unauthenticated("TOKEN_INVALID", `the token is not valid here (${why})`);
    }
    const { sub, roles } = payload;
    if (typeof sub !== "string" || sub === "") {
      throw unauthenticated("TOKEN_INVALID", "the token names no subject");
    }
    if (!readAtTheEdge(payload)) {
      throw unauthenticated("TOKEN_INVALID", "the token's times or subject are malformed");
    }
    if (!jsonAsTheEdgeReadsIt(token)) {
      throw unauthenticated("TOKEN_INVALID", "the token repeats a claim or starts with a BOM");
    }
    const expires = (payload.exp as number) * 1000;
    const verified: VerifiedToken = {
      caller: {
        userId: sub,
        roles: Array.isArray(roles) ? roles.filter((role) => typeof role === "string") : [],
      },
      acceptedUntil: expires + CLOCK_SKEW_S * 1000,
    };
    if (this.cache.size >= CACHE_SIZE) this.cache.clear();
    this.cache.set(token, { verified, until: Math.min(now + CACHE_MS, expires) });
    return verified;
  }
}

/** A bearer token and where its header had it. */
export interface Bearer {
  token: string;
  /** The header had another scheme first (`Basic …, Bearer <token>`). */
  late: boolean;
}

/**
 * The token of `authorization: Bearer <token>` headers (or `bearer`): undefined when there is
 * none; else everything after the scheme, which fails verification unless it is one token
 * (`Bearer a b`). The edge also finds `Bearer ` after another scheme: such a token is read too,
 * so that both doors refuse it for the same reason, and `late` says the service must refuse it
 * even once verified. Two `authorization` headers never reach here as two: Node's HTTP/2 parser
 * keeps the first, and that token is verified like any other; a caller given the headers as a
 * list joins them, which fails.
 */
export function bearerToken(headers: readonly unknown[]): Bearer | undefined {
  const header = headers.length === 1 ? headers[0] : headers.join(", ");
  if (typeof header !== "string") return undefined;
  const found = /^(.*?)[Bb]earer +(.+?)\s*$/s.exec(header);
  if (!found) return undefined;
  return { token: found[2] as string, late: (found[1] as string).trim() !== "" };
}

const isAdmin = (caller: Caller) => caller.roles.includes(ADMIN);

/** The signed-in caller; UNAUTHENTICATED (TOKEN_MISSING) on a call that has none. */
export function callerOf(ctx: CallContext): Caller {
  const caller = ctx.get(CALLER);
  if (!caller) throw unauthenticated("TOKEN_MISSING", "this call needs a bearer token");
  return caller;
}

/**
 * The caller owns what belongs to `ownerId`, or is an admin: else PERMISSION_DENIED (NOT_OWNER).
 * Handlers call it where they read the data, with the owner the data names (an order's
 * user_id), never one a caller could choose.
 */
export function requireOwner(ctx: CallContext, ownerId: string, what: string): void {
  const caller = callerOf(ctx);
  if (caller.userId !== ownerId && !isAdmin(caller)) {
    throw permissionDenied("NOT_OWNER", `${what} belongs to another user`);
  }
}

/** The caller is `userId` itself, admin or not: else PERMISSION_DENIED (NOT_OWNER). */
export function requireSelf(ctx: CallContext, userId: string, field: string): void {
  if (callerOf(ctx).userId !== userId) {
    throw permissionDenied("NOT_OWNER", `${field} must be the signed-in user's id`);
  }
}

/** The caller has role admin: else PERMISSION_DENIED (ADMIN_REQUIRED). */
export function requireAdmin(ctx: CallContext, what: string): void {
  if (!isAdmin(callerOf(ctx))) throw permissionDenied("ADMIN_REQUIRED", `${what} needs role admin`);
}
