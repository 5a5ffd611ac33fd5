// The HTTP/2 connections a server's calls run on, so that a shutdown can cut those still open a
// fixed time after its grace period ends. grpc-js's drain() counts that time from its own call, at
// the shutdown's start, and cannot be asked again: it forgets a connection once it is closing.
import { constants, type Http2Session } from "node:http2";
import type * as grpc from "@grpc/grpc-js";
import { markCut, watchClosing } from "./connection-closing.js";
import { streamOf } from "./http2-stream.js";

export class ServerSessions {
  readonly #open = new Set<Http2Session>();

  /** A server interceptor: notes the connection of every call, then lets the call go on. */
  readonly interceptor: grpc.ServerInterceptor = (_method, call) => {
    const session = streamOf({ call })?.session;
    if (session && !session.destroyed && !this.#open.has(session)) {
      this.#open.add(session);
      watchClosing(session);
      session.once("close", () => this.#open.delete(session));
    }
    return call as grpc.ServerInterceptingCall;
  };

  /**
   * Notes that the server now cuts what still runs on every connection: a call that ends
   * cancelled from here on was ended by the server, not by its caller.
   */
  cutting(): void {
    for (const session of this.#open) markCut(session);
  }

  /** Closes every connection still open, and the calls on it, with HTTP/2's CANCEL. */
  cut(): void {
    this.cutting();
    for (const session of this.#open) session.destroy(undefined, constants.NGHTTP2_CANCEL);
  }
}
