// A caller's mesh identity comes from its certificate, decoded once per connection (kit/tls.ts
// authContextOf) and never carried over to another connection. Real grpc-js server and clients
// with mutual TLS on loopback, the development certificates, port 0.
import { TLSSocket } from "node:tls";
import * as grpc from "@grpc/grpc-js";
import test, { type ExecutionContext } from "ava";
import {
  authContextOf,
  channelCredentials,
  peerIdentity,
  readTls,
  serverCredentials,
} from "../../kit/tls.js";
import { identity } from "../helpers/credentials.js";

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

test("identity is decoded once per TLS 1.3 connection, and each connection keeps its own", async (t) => {
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
  t.deepEqual(await Promise.all([ask(order), ask(order), ask(order)]), ["order", "order", "order"]);
  t.is(counter.reads, afterFirst, "a later call on the connection decoded the certificate again");

  // Another connection, another identity: decoded for it, and not mixed up with the first.
  const user = clientAs("user");
  t.is(await ask(user), "user");
  t.true(counter.reads > afterFirst);
  t.is(await ask(order), "order");
});

test("a plaintext call has no identity", async (t) => {
  const address = await serve(t, serverCredentials(undefined));
  const client = clientOf(t, address, channelCredentials(undefined));
  t.is(await ask(client), "none");
});
