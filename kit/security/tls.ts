import { readFileSync } from "node:fs";
import type { PeerCertificate } from "node:tls";
import * as grpc from "@grpc/grpc-js";

/** The PEM files of one mesh identity: its certificate and key, and the CA it trusts. */
export interface TlsFiles {
  cert: string;
  key: string;
  ca: string;
}

/** The same files, read. */
export interface TlsMaterial {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

export const readTls = (files: TlsFiles): TlsMaterial => ({
  cert: readFileSync(files.cert),
  key: readFileSync(files.key),
  ca: readFileSync(files.ca),
});

/** The identity of the front door (Envoy): it reaches the public API only. */
export const EDGE_IDENTITY = "edge";

/** The URI SAN prefix of a mesh identity: `spiffe://shopmesh/<name>`. */
export const IDENTITY_PREFIX = "spiffe://shopmesh/";

/**
 * Mutual TLS for a server: it presents its certificate and refuses any client without a
 * certificate signed by the mesh's CA. Without `tls`, plaintext.
 */
export function serverCredentials(tls: TlsMaterial | undefined): grpc.ServerCredentials {
  if (!tls) return grpc.ServerCredentials.createInsecure();
  return grpc.ServerCredentials.createSsl(
    tls.ca,
    [{ private_key: tls.key, cert_chain: tls.cert }],
    true,
  );
}

/**
 * TLS for a client: it trusts only the mesh's CA and presents its own certificate (mutual TLS).
 * `expect` names the identity the server must prove, whatever name or address it is dialled by:
 * its certificate's URI SAN `spiffe://shopmesh/<expect>`, as Envoy checks it, and no DNS name.
 * Without `tls`, plaintext.
 */
export function channelCredentials(
  tls: TlsMaterial | undefined,
  expect?: string,
): { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions } {
  if (!tls) return { credentials: grpc.credentials.createInsecure(), options: {} };
  const proves = (_host: string, certificate: PeerCertificate) =>
    identityIn(certificate.subjectaltname) === expect
      ? undefined
      : new Error(`the server's certificate does not carry ${IDENTITY_PREFIX}${expect}`);
  return {
    credentials: grpc.credentials.createSsl(
      tls.ca,
      tls.key,
      tls.cert,
      expect === undefined ? undefined : { checkServerIdentity: proves },
    ),
    options: expect ? { "grpc.ssl_target_name_override": expect } : {},
  };
}

/** A served call, as grpc-js hands it to a handler. */
type ServedCall = Pick<grpc.ServerUnaryCall<unknown, unknown>, "getAuthContext">;

/** What the transport knows of a caller (grpc-js's AuthContext, which it does not export). */
export type AuthContext = ReturnType<ServedCall["getAuthContext"]>;

/** An HTTP/2 connection, as far as authContextOf reads it. */
interface Connection {
  encrypted?: boolean;
  socket?: { getProtocol?(): string | null };
}

/**
 * The connection a served call arrived on. grpc-js does not expose it, so this follows its
 * internals (the call, its server interceptors, their HTTP/2 stream); undefined when they change.
 */
function connectionOf(call: ServedCall): Connection | undefined {
  type Inner = { nextCall?: Inner; stream?: { session?: Connection } };
  let inner = (call as { call?: Inner }).call;
  while (inner?.nextCall) inner = inner.nextCall;
  const session = inner?.stream?.session;
  return typeof session === "object" && session !== null ? session : undefined;
}

const authContexts = new WeakMap<Connection, AuthContext>();

/**
 * What the transport knows of a served call's peer, read once per TLS 1.3 connection. grpc-js's
 * getAuthContext() decodes the peer's certificate afresh for every call (13% of product's CPU
 * under CreateOrder load: README, "Performance"); a TLS 1.3 connection cannot renegotiate, so its
 * certificate never changes. Anything else (plaintext, TLS 1.2, an unknown grpc-js) is read per
 * call, as grpc-js does.
 */
export function authContextOf(call: ServedCall): AuthContext {
  const connection = connectionOf(call);
  if (!connection?.encrypted) return call.getAuthContext();
  let auth = authContexts.get(connection);
  if (!auth) {
    auth = call.getAuthContext();
    if (connection.socket?.getProtocol?.() === "TLSv1.3") authContexts.set(connection, auth);
  }
  return auth;
}

/**
 * The mesh identity of a caller: the name in its certificate's `spiffe://shopmesh/<name>` URI,
 * e.g. "order". Undefined for a plaintext caller. Trustworthy only because a mesh server accepts
 * no certificate its CA did not sign.
 */
export function peerIdentity(auth: AuthContext): string | undefined {
  return identityIn(auth.sslPeerCertificate?.subjectaltname);
}

/**
 * The mesh identity a certificate's subjectAltName names: its spiffe://shopmesh/ URI. A SPIFFE
 * identity document carries exactly one URI, so a certificate with two names no identity.
 */
function identityIn(san: string | undefined): string | undefined {
  const uris = (san?.split(", ") ?? []).filter((entry) => entry.startsWith("URI:"));
  const [uri] = uris;
  if (uris.length !== 1 || !uri?.startsWith(`URI:${IDENTITY_PREFIX}`)) return undefined;
  return uri.slice(4 + IDENTITY_PREFIX.length);
}
