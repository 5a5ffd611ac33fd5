import { BinaryReader } from "@bufbuild/protobuf/wire";
import type { PackageDefinition } from "@grpc/proto-loader";
import { ReflectionService } from "@grpc/reflection";
import { descriptorSet } from "./descriptor.js";

/** The FileDescriptorProtos of a FileDescriptorSet, byte for byte as buf built them. */
function filesOf(set: Buffer): Buffer[] {
  const reader = new BinaryReader(set);
  const files: Buffer[] = [];
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 1) files.push(Buffer.from(reader.bytes()));
    else reader.skip(wireType);
  }
  return files;
}

/**
 * Server reflection (v1 and v1alpha) over the descriptor set from `npm run generate`, which also
 * holds grpc.health.v1: grpcurl can list, describe and call everything with no local protos.
 * The files are served as buf built them, with comments and every google import.
 */
export function reflectionService(): ReflectionService {
  const root = { "shop.descriptors": { fileDescriptorProtos: filesOf(descriptorSet()) } };
  return new ReflectionService(root as unknown as PackageDefinition);
}

/**
 * Reflection answers an unknown symbol or file with an error message that quotes it: clipped,
 * so that a reply to a request near the size limit still fits the client's.
 */
export function clipReflectionError(message: unknown): unknown {
  const error = (message as { errorResponse?: { errorMessage?: unknown } } | null)?.errorResponse;
  if (typeof error?.errorMessage === "string" && error.errorMessage.length > 1024) {
    error.errorMessage = `${error.errorMessage.slice(0, 1024)}…`;
  }
  return message;
}
