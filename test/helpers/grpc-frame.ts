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
