// A TCP proxy between a service and its PostgreSQL server, for the network faults a test cannot
// ask the server for: a connection that goes silent, or one cut just as the server answers.
//
//   const proxy = await pgProxy(t, url);             // proxy.url: the same database, through it
//   proxy.freeze();                                  // open connections pass nothing more
//   proxy.holdNew();                                 // new connections are taken, never served
//   proxy.cutReplyTo(/insert into "products"/i);     // the next such statement runs; its reply is lost
//   proxy.cutReplyTo(/INSERT INTO orders/, /COMMIT/); // the transaction that ran it commits; that reply is lost
import net from "node:net";
import type { ExecutionContext } from "ava";

interface Pair {
  client: net.Socket;
  upstream: net.Socket;
  frozen: boolean;
  /** The server's next bytes are not passed on: the connection is cut instead. */
  cutOnReply: boolean;
  /** Once the client sends a message that matches, cutOnReply is set. */
  cutAfter?: { pattern: RegExp; cut: () => void };
}

export interface PgProxy {
  /** The database's URL with the proxy's port. */
  url: string;
  /** Silences every connection open now (no reply, no close). New ones pass. */
  freeze(): void;
  /** Takes every new connection and passes nothing on it, as a hung server would. */
  holdNew(): void;
  /**
   * The next message a service sends that matches `pattern` reaches the server, which runs it;
   * the connection is cut before the server's answer gets back. With `then`, the cut comes at
   * the answer to the next message on that connection that matches `then` instead (the COMMIT of
   * the transaction the first ran in). Resolves once it is cut.
   */
  cutReplyTo(pattern: RegExp, then?: RegExp): Promise<void>;
}

export async function pgProxy(t: ExecutionContext, databaseUrl: string): Promise<PgProxy> {
  const url = new URL(databaseUrl);
  const target = { port: Number(url.port), host: url.hostname };
  const pairs = new Set<Pair>();
  let armed: { pattern: RegExp; then?: RegExp; cut: () => void } | undefined;
  const held = new Set<net.Socket>();
  let holding = false;
  const server = net.createServer((client) => {
    if (holding) {
      held.add(client);
      client.on("error", () => {});
      return;
    }
    const upstream = net.connect(target.port, target.host);
    const pair: Pair = { client, upstream, frozen: false, cutOnReply: false };
    pairs.add(pair);
    for (const socket of [client, upstream]) {
      socket.on("error", () => {});
      socket.on("close", () => {
        client.destroy();
        upstream.destroy();
        pairs.delete(pair);
      });
    }
    client.on("data", (data: Buffer) => {
      if (pair.frozen) return;
      const text = data.toString("latin1");
      if (pair.cutAfter?.pattern.test(text)) {
        pair.cutOnReply = true;
        upstream.once("close", pair.cutAfter.cut);
      } else if (armed?.pattern.test(text)) {
        const { then, cut } = armed;
        armed = undefined;
        if (then) pair.cutAfter = { pattern: then, cut };
        else {
          pair.cutOnReply = true;
          upstream.once("close", cut);
        }
      }
      upstream.write(data);
    });
    upstream.on("data", (data: Buffer) => {
      if (pair.frozen) return;
      if (pair.cutOnReply) {
        client.destroy();
        upstream.destroy();
        return;
      }
      client.write(data);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  t.teardown(() => {
    for (const socket of held) socket.destroy();
    for (const pair of pairs) {
      pair.client.destroy();
      pair.upstream.destroy();
    }
    server.close();
  });
  url.port = String((server.address() as net.AddressInfo).port);
  return {
    url: url.toString(),
    freeze() {
      for (const pair of pairs) pair.frozen = true;
    },
    holdNew() {
      holding = true;
    },
    cutReplyTo(pattern, then) {
      return new Promise((resolve) => {
        armed = { pattern, then, cut: resolve };
      });
    },
  };
}
