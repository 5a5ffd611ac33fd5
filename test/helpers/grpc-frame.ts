import type { ClientHttp2Session, ClientHttp2Stream, OutgoingHttpHeaders } from "node:http2";

/**
 * A gRPC length-prefixed message, the envelope gRPC-Web and Connect streaming use too: a flag
 * byte (1: compressed), a 4-byte length (`length` if given, to send a wrong one), then `body`.
 */
export function grpcFrame(body: Uint8Array, compressed = false, length = body.length): Buffer {
  const head = Buffer.alloc(5);
  head[0] = compressed ? 1 : 0;
  head.writeUInt32BE(length, 1);
  return Buffer.concat([head, body]);
}

/**
 * A gRPC call opened on `session` by hand, past every client library: its stream, left open for
 * the test to write, and the grpc-status it ends with (trailers-only or trailers), as text.
 */
export function rawGrpcCall(
  session: ClientHttp2Session,
  path: string,
  headers: OutgoingHttpHeaders = {},
): { stream: ClientHttp2Stream; status: Promise<string> } {
  const stream = session.request(
    {
      ":method": "POST",
      ":path": path,
      "content-type": "application/grpc",
      te: "trailers",
      ...headers,
    },
    { endStream: false },
  );
  stream.on("error", () => {});
  const status = new Promise<string>((resolve) => {
    stream.on("response", (response) => {
      if (response["grpc-status"] !== undefined) resolve(String(response["grpc-status"]));
    });
    stream.on("trailers", (trailers) => resolve(String(trailers["grpc-status"])));
  });
  return { stream, status };
}
