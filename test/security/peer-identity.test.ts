// A caller's mesh identity comes from its certificate, decoded once per connection (kit/security/tls.ts
// authContextOf) and never carried over to another connection. Real grpc-js server and clients
// with mutual TLS on loopback, the development certificates, port 0.
import { execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { TLSSocket } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import {
  authContextOf,
  channelCredentials,
  IDENTITY_PREFIX,
  peerIdentity,
  readTls,
  serverCredentials,
} from "../../kit/security/tls.js";
import { CERTS, identity } from "../helpers/credentials.js";

const raw = (bytes: Buffer) => bytes;

/** One rpc that answers with the caller's identity as authContextOf reads it. */
const whoAmI = {
  path: "/shopmesh.test.Identity/WhoAmI",
  requestStream: false,
  responseStream: false,
  requestSerialize: raw,
  requestDeserialize: raw,
  responseSerialize: raw,
  responseDeserialize: raw,
} as const;

/** Counts the certificates decoded by any TLS socket of this process, client or server. */
function countPeerCertificateReads() {
  const original = TLSSocket.prototype.getPeerCertificate;
  const counter = { reads: 0, restore: () => {} };
  TLSSocket.prototype.getPeerCertificate = function (this: TLSSocket, ...args: [boolean?]) {
    counter.reads++;
    return original.apply(this, args as [true]);
  } as typeof original;
  counter.restore = () => {
    TLSSocket.prototype.getPeerCertificate = original;
  };
  return counter;
}

/** A server of whoAmI on a port of its own; stopped when the test ends. */
async function serve(t: ExecutionContext, credentials: grpc.ServerCredentials) {
  const server = new grpc.Server();
  server.addService(
    { whoAmI },
    {
      whoAmI: (call: grpc.ServerUnaryCall<Buffer, Buffer>, done: grpc.sendUnaryData<Buffer>) => {
        done(null, Buffer.from(peerIdentity(authContextOf(call)) ?? "none"));
      },
    },
  );
  t.teardown(() => server.forceShutdown());
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync("127.0.0.1:0", credentials, (error, bound) =>
      error ? reject(error) : resolve(bound),
    ),
  );
  return `127.0.0.1:${port}`;
}

const ask = (client: grpc.Client) =>
  new Promise<string>((resolve, reject) =>
    client.makeUnaryRequest(whoAmI.path, raw, raw, Buffer.alloc(0), (error, reply) =>
      error ? reject(error) : resolve(String(reply)),
    ),
  );

/** A client of `address`, closed when the test ends. */
function clientOf(
  t: ExecutionContext,
  address: string,
  channel: { credentials: grpc.ChannelCredentials; options: grpc.ChannelOptions },
) {
  const client = new grpc.Client(address, channel.credentials, channel.options);
  t.teardown(() => client.close());
  return client;
}

// Serial: it counts the certificates every TLS socket of the process decodes.
test.serial(
  "identity is decoded once per TLS 1.3 connection, and each connection keeps its own",
  async (t) => {
    const address = await serve(t, serverCredentials(readTls(identity("product"))));
    const clientAs = (name: string) =>
      clientOf(t, address, channelCredentials(readTls(identity(name)), "product"));
    const counter = countPeerCertificateReads();
    t.teardown(counter.restore);

    const order = clientAs("order");
    t.is(await ask(order), "order");
    const afterFirst = counter.reads;
    t.true(afterFirst >= 1);
    // More calls on the same connection decode no certificate, on either side.
    t.deepEqual(await Promise.all([ask(order), ask(order), ask(order)]), [
      "order",
      "order",
      "order",
    ]);
    t.is(counter.reads, afterFirst, "a later call on the connection decoded the certificate again");

    // Another connection, another identity: decoded for it, and not mixed up with the first.
    const user = clientAs("user");
    t.is(await ask(user), "user");
    t.true(counter.reads > afterFirst);
    t.is(await ask(order), "order");
  },
);

test("a plaintext call has no identity", async (t) => {
  const address = await serve(t, serverCredentials(undefined));
  const client = clientOf(t, address, channelCredentials(undefined));
  t.is(await ask(client), "none");
});

/**
 * A certificate of the mesh's CA for `identity` with its URI SAN alone, as an operator's own PKI
 * (cert-manager, SPIFFE) issues one: no DNS name, and a common name that is not the identity.
 */
async function uriOnlyCertificate(t: ExecutionContext, ...names: string[]) {
  const dir = await mkdtemp(path.join(tmpdir(), "shopmesh-identity-"));
  t.teardown(() => rm(dir, { recursive: true, force: true }));
  const uris = names.map((name) => `URI:${IDENTITY_PREFIX}${name}`).join(",");
  await writeFile(
    path.join(dir, "ext"),
    `basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=${uris}\n`,
  );
  const openssl = (args: string[]) => execFileSync("openssl", args, { cwd: dir, stdio: "pipe" });
  openssl(
    ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"].concat([
      "-keyout",
      "id.key",
      "-out",
      "id.csr",
      "-subj",
      `/O=elsewhere/CN=${names.join("-")}-pod-7f9c`,
    ]),
  );
  openssl(
    ["x509", "-req", "-in", "id.csr", "-CA", path.join(CERTS, "ca.crt")].concat(
      ["-CAkey", path.join(CERTS, "ca.key"), "-set_serial", "0x1f", "-days", "1"],
      ["-extfile", "ext", "-out", "id.crt"],
    ),
  );
  return readTls({
    cert: path.join(dir, "id.crt"),
    key: path.join(dir, "id.key"),
    ca: path.join(CERTS, "ca.crt"),
  });
}

test("a server proves its identity by its spiffe URI alone, as the docs issue it", async (t) => {
  const address = await serve(t, serverCredentials(await uriOnlyCertificate(t, "user")));
  const order = readTls(identity("order"));
  t.is(await ask(clientOf(t, address, channelCredentials(order, "user"))), "order");
  // The same server is no other identity, whatever address it is dialled by.
  const refused = await ask(clientOf(t, address, channelCredentials(order, "product"))).catch(
    (error: grpc.ServiceError) => error,
  );
  t.like(refused, { code: grpc.status.UNAVAILABLE });
});

test("a certificate naming two mesh identities proves neither, as a caller or as a server", async (t) => {
  const both = await uriOnlyCertificate(t, "order", "user");
  const address = await serve(t, serverCredentials(readTls(identity("product"))));
  t.is(await ask(clientOf(t, address, channelCredentials(both, "product"))), "none");

  const twoNamed = await serve(t, serverCredentials(both));
  const cli = readTls(identity("cli"));
  for (const expected of ["order", "user"]) {
    const refused = await ask(clientOf(t, twoNamed, channelCredentials(cli, expected))).catch(
      (error: grpc.ServiceError) => error,
    );
    t.like(refused, { code: grpc.status.UNAVAILABLE }, expected);
  }
});
