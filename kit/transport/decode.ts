import { isUtf8 } from "node:buffer";
import {
  create,
  createFileRegistry,
  type DescMessage,
  type FileRegistry,
  fromBinary,
  ScalarType,
} from "@bufbuild/protobuf";
import { BinaryReader, WireType } from "@bufbuild/protobuf/wire";
import { FileDescriptorProtoSchema, FileDescriptorSetSchema } from "@bufbuild/protobuf/wkt";
import { contractRegistry } from "../contract.js";
import { Code, ServiceError } from "../errors.js";

/** What a request deserializer returns instead of a message when the bytes are not one. */
export class Malformed {
  constructor(
    /** The field to blame, as a path such as "lines[1].product_id", and what is wrong with it. */
    readonly violation?: FieldViolation,
    /** The refusal, when the request broke gRPC's framing rather than its message (framing.ts). */
    readonly error?: ServiceError,
    /** The request messages grpc-js read for the call: 1, or 0 or 2 when the framing was at fault. */
    readonly messages = 1,
  ) {}
}

interface FieldViolation {
  field: string;
  description: string;
}

/** INVALID_ARGUMENT (reason MALFORMED_REQUEST) for a request message that did not decode. */
export function malformedError(malformed: Malformed): ServiceError {
  const { violation, error } = malformed;
  if (error) return error;
  if (!violation) {
    return new ServiceError(Code.INVALID_ARGUMENT, "the request message could not be decoded", {
      reason: "MALFORMED_REQUEST",
    });
  }
  return new ServiceError(Code.INVALID_ARGUMENT, `${violation.field}: ${violation.description}`, {
    reason: "MALFORMED_REQUEST",
    fieldViolations: [violation],
  });
}

// Protobuf merges a message field given twice; the generated decoders keep the last one, and
// would drop what the first set (an update_mask's paths, say) without a word.
const TWICE = "is given twice; a message field is sent once";

/**
 * Bounds on what a request may make the server build or read, checked before it is decoded. A
 * 4 MB message of two million empty list items, or of unknown fields, is a few KB compressed, and
 * decodes to two million objects (enough to run a service out of memory) or costs a fifth of a
 * second of CPU. A list may hold ten times the longest this contract accepts (100 lines); a
 * request may hold ten times the fields such a list needs.
 */
export const MAX_LIST_ITEMS = 1000;
export const MAX_FIELDS = 10_000;
const tooMany = (field: string): FieldViolation => ({
  field,
  description: `holds more than ${MAX_LIST_ITEMS} items`,
});

class TooManyFields extends Error {}

/** Charges `budget` one field. */
function charge(budget: { fields: number }): void {
  if (--budget.fields < 0) throw new TooManyFields();
}

/**
 * Skips the rest of a group that began with field `number`, charging each field in it: a group
 * holds any number of fields, which the generated decoder would read past one by one.
 */
function skipGroup(reader: BinaryReader, number: number, budget: { fields: number }): void {
  for (;;) {
    charge(budget);
    const [inner, wireType] = reader.tag();
    if (wireType === WireType.EndGroup) {
      if (inner !== number) throw new Error("a group ends with another field's tag");
      return;
    }
    if (wireType === WireType.StartGroup) skipGroup(reader, inner, budget);
    else skipScalar(reader, wireType, inner);
  }
}

/**
 * Skips a field that is not a group. A varint is read, not skipped: protobuf-es's skip() takes one
 * of any length, where a varint is at most 10 bytes and the generated decoder refuses a longer one.
 */
function skipScalar(reader: BinaryReader, wireType: WireType, number: number): void {
  if (wireType === WireType.Varint) reader.uint32();
  else reader.skip(wireType, number);
}

/** Skips a field of `wireType`, charging `budget` for each field of a group. */
function skipField(
  reader: BinaryReader,
  wireType: WireType,
  number: number,
  budget: { fields: number },
): void {
  if (wireType === WireType.StartGroup) skipGroup(reader, number, budget);
  else skipScalar(reader, wireType, number);
}
const notUtf8 = (field: string): FieldViolation => ({ field, description: "is not valid UTF-8" });

/** A registry of serialized FileDescriptorProtos, as proto-loader keeps them for its services. */
function registryOf(files: readonly Uint8Array[]): FileRegistry {
  const protos = files.map((bytes) => fromBinary(FileDescriptorProtoSchema, bytes));
  // protobufjs writes type names relative to the file's package; the registry wants them full.
  for (const file of protos) {
    const qualify = (name: string) => (name.startsWith(".") ? name : `.${file.package}.${name}`);
    for (const message of file.messageType) {
      for (const field of message.field)
        if (field.typeName) field.typeName = qualify(field.typeName);
    }
    for (const service of file.service) {
      for (const method of service.method) {
        method.inputType = qualify(method.inputType);
        method.outputType = qualify(method.outputType);
      }
    }
  }
  return createFileRegistry(create(FileDescriptorSetSchema, { file: protos }));
}

/**
 * The request message of an rpc path ("/pkg.Service/Method"): from our descriptor set, or else
 * from `files` (a library's service as proto-loader describes it). Undefined when neither does.
 */
function inputOf(path: string, files?: readonly Uint8Array[]): DescMessage | undefined {
  const [, service = "", method = ""] = path.split("/");
  const find = (registry: FileRegistry) =>
    registry.getService(service)?.methods.find((m) => m.name === method)?.input;
  try {
    return find(contractRegistry()) ?? (files ? find(registryOf(files)) : undefined);
  } catch {
    return undefined;
  }
}

/**
 * The first field of `message` in `bytes` that the generated decoder would read wrong, or
 * undefined: a string that is not valid UTF-8, a message field given twice, or a list longer than
 * MAX_LIST_ITEMS. Proto3 requires valid UTF-8 in strings, but decoders that do not check it
 * replace bad bytes with U+FFFD, which cannot be told from a real U+FFFD afterwards: so the check
 * reads the wire format itself, guided by the descriptor.
 */
function misread(
  message: DescMessage,
  bytes: Uint8Array,
  prefix = "",
  budget = { fields: MAX_FIELDS },
): FieldViolation | undefined {
  const reader = new BinaryReader(bytes);
  const seen = new Map<number, number>();
  while (reader.pos < reader.len) {
    charge(budget);
    const [number, wireType] = reader.tag();
    const field = message.fields.find((f) => f.number === number);
    const list = field?.fieldKind === "list";
    const counted = field && (list || wireType === WireType.LengthDelimited);
    const i = counted ? (seen.get(number) ?? 0) : 0;
    if (counted) seen.set(number, i + 1);
    if (list && i === MAX_LIST_ITEMS) return tooMany(`${prefix}${field.name}`);
    if (wireType !== WireType.LengthDelimited) {
      skipField(reader, wireType, number, budget);
      continue;
    }
    const value = reader.bytes();
    if (!field) continue;
    const path = `${prefix}${field.name}`;
    switch (field.fieldKind) {
      case "scalar":
        if (field.scalar === ScalarType.STRING && !isUtf8(value)) return notUtf8(path);
        break;
      case "message": {
        if (i > 0) return { field: path, description: TWICE };
        const inner = misread(field.message, value, `${path}.`, budget);
        if (inner) return inner;
        break;
      }
      case "list": {
        const item = `${path}[${i}]`;
        if (field.listKind === "scalar" && field.scalar === ScalarType.STRING && !isUtf8(value)) {
          return notUtf8(item);
        }
        if (field.listKind === "message") {
          const inner = misread(field.message, value, `${item}.`, budget);
          if (inner) return inner;
        }
        break;
      }
      case "map": {
        // An entry is a message with the key as field 1 and the value as field 2.
        const entry = new BinaryReader(value);
        while (entry.pos < entry.len) {
          charge(budget);
          const [n, type] = entry.tag();
          if (type !== WireType.LengthDelimited) {
            skipField(entry, type, n, budget);
            continue;
          }
          const part = entry.bytes();
          if (n === 1 && field.mapKey === ScalarType.STRING && !isUtf8(part)) return notUtf8(path);
          if (n === 2 && field.mapKind === "scalar" && field.scalar === ScalarType.STRING) {
            if (!isUtf8(part)) return notUtf8(path);
          }
          if (n === 2 && field.mapKind === "message") {
            const inner = misread(field.message, part, `${path}.`, budget);
            if (inner) return inner;
          }
        }
        break;
      }
    }
  }
  return undefined;
}

/**
 * Wraps an rpc's request deserializer so that it never throws: bytes that do not decode, or that
 * carry invalid UTF-8 in a string field, become a Malformed value for the handler to refuse. The
 * check reads every tag strictly (field number 0, say), where a generated decoder may skip what it
 * does not expect, and runs first, so that an overlong list is refused before it is built.
 */
export function guardDeserialize<T>(
  path: string,
  deserialize: (bytes: Buffer) => T,
  files?: readonly Uint8Array[],
): (bytes: Buffer) => T | Malformed {
  // Looked up now, while the server starts, rather than on the first call.
  const input = inputOf(path, files);
  return (bytes) => {
    try {
      const violation = input && misread(input, bytes);
      return violation ? new Malformed(violation) : deserialize(bytes);
    } catch (error) {
      if (!(error instanceof TooManyFields)) return new Malformed();
      const text = `the request message holds more than ${MAX_FIELDS} fields`;
      return new Malformed(
        undefined,
        new ServiceError(Code.INVALID_ARGUMENT, text, { reason: "MALFORMED_REQUEST" }),
      );
    }
  };
}
