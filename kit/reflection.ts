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

/** The proto package of a FileDescriptorProto (field 2). */
function packageOfFile(file: Buffer): string {
  const reader = new BinaryReader(file);
  while (reader.pos < reader.len) {
    const [field, wireType] = reader.tag();
    if (field === 2) return reader.string();
    reader.skip(wireType);
  }
  return "";
}

/**
 * A FileDescriptorProto without the services (field 6) whose full names are in `hidden`; every
 * other field is copied byte for byte.
 */
function withoutServices(file: Buffer, hidden: ReadonlySet<string>): Buffer {
  const pkg = packageOfFile(file);
  const reader = new BinaryReader(file);
  const kept: Buffer[] = [];
  while (reader.pos < reader.len) {
    const start = reader.pos;
    const [field, wireType] = reader.tag();
    if (field === 6) {
      const service = new BinaryReader(reader.bytes());
      let name = "";
      while (service.pos < service.len) {
        const [inner, innerType] = service.tag();
        if (inner === 1) name = service.string();
        else service.skip(innerType);
      }
      if (hidden.has(`${pkg}.${name}`)) continue;
    } else {
      reader.skip(wireType);
    }
    kept.push(file.subarray(start, reader.pos));
  }
  return Buffer.concat(kept);
}

/**
 * Server reflection (v1 and v1alpha) over the descriptor set from `npm run generate`, which also
 * holds grpc.health.v1: grpcurl can list, describe and call everything with no local protos.
 * The files are served as buf built them, with comments and every google import, less the
 * proto services named in `hidden` (the internal ones, for callers outside the mesh).
 */
export function reflectionService(hidden: readonly string[] = []): ReflectionService {
  const set = new Set(hidden);
  const files = filesOf(descriptorSet()).map((file) =>
    set.size ? withoutServices(file, set) : file,
  );
  const root = { "shop.descriptors": { fileDescriptorProtos: files } };
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
