// What buf's breaking rules leave out: they read no custom options. A client of the released
// contract also breaks when its REST binding changes, when a request field it may leave out becomes
// REQUIRED, and when an rpc it retries (or calls by Connect GET) no longer promises that is safe.
import {
  createFileRegistry,
  type DescField,
  type DescMessage,
  type DescMethod,
  type FileRegistry,
  fromBinary,
  getExtension,
} from "@bufbuild/protobuf";
import {
  FileDescriptorSetSchema,
  MethodOptions_IdempotencyLevel as Level,
} from "@bufbuild/protobuf/wkt";
import { type Binding, bindingsOf, variablesOf } from "../../deploy/envoy/http-rules.js";
import { http } from "../../gen/es/google/api/annotations_pb.js";
import { FieldBehavior, field_behavior } from "../../gen/es/google/api/field_behavior_pb.js";

export const readContract = (bytes: Uint8Array): FileRegistry =>
  createFileRegistry(fromBinary(FileDescriptorSetSchema, bytes));

function rpcsOf(contract: FileRegistry): Map<string, DescMethod> {
  const rpcs = new Map<string, DescMethod>();
  for (const type of contract) {
    if (type.kind !== "service") continue;
    for (const method of type.methods) rpcs.set(`${type.typeName}.${method.name}`, method);
  }
  return rpcs;
}

const bindings = (method: DescMethod) =>
  method.proto.options ? bindingsOf(getExtension(method.proto.options, http)) : [];

const show = ({ verb, template, body, responseBody }: Binding) =>
  [
    `${verb} ${template}`,
    body && `body "${body}"`,
    responseBody && `response_body "${responseBody}"`,
  ]
    .filter(Boolean)
    .join(" ");

const required = (field: DescField | undefined) =>
  field?.proto.options !== undefined &&
  getExtension(field.proto.options, field_behavior).includes(FieldBehavior.REQUIRED);

/** The fields of a request message and of every message nested in it. */
function fieldsOf(message: DescMessage, seen = new Set<string>()): DescField[] {
  if (seen.has(message.typeName)) return [];
  seen.add(message.typeName);
  return message.fields.flatMap((field) => [
    field,
    ...(field.message ? fieldsOf(field.message, seen) : []),
  ]);
}

// Least to most a client may do: retry an IDEMPOTENT rpc, also GET a NO_SIDE_EFFECTS one (Connect).
const PROMISE = [Level.IDEMPOTENCY_UNKNOWN, Level.IDEMPOTENT, Level.NO_SIDE_EFFECTS];

/** One line per break, each naming the rpc; none when the current contract keeps the released. */
export function contractBreaks(released: FileRegistry, current: FileRegistry): string[] {
  const breaks = new Set<string>();
  const now = rpcsOf(current);
  for (const [name, was] of rpcsOf(released)) {
    const is = now.get(name);
    if (!is) continue;
    const say = (what: string) => breaks.add(`${is.parent.file.proto.name}: ${name}: ${what}`);

    const wasBound = bindings(was);
    const isBound = bindings(is);
    const shown = isBound.map(show);
    for (const binding of wasBound.map(show)) {
      if (shown.includes(binding)) continue;
      say(`REST binding ${binding} was removed or changed (now ${shown.join(", ") || "none"})`);
    }
    if (wasBound.length > 0) {
      const inPath = new Set(wasBound.flatMap((binding) => variablesOf(binding.template)));
      for (const binding of isBound) {
        for (const field of variablesOf(binding.template)) {
          if (inPath.has(field)) continue;
          say(`request field ${field} is newly set by the path of ${show(binding)}`);
        }
      }
    }

    for (const field of fieldsOf(is.input)) {
      const before = released.getMessage(field.parent.typeName);
      if (!before || !required(field)) continue;
      if (!required(before.fields.find((old) => old.number === field.number))) {
        say(`request field ${field.parent.typeName}.${field.name} is newly REQUIRED`);
      }
    }

    if (PROMISE.indexOf(is.idempotency) < PROMISE.indexOf(was.idempotency)) {
      say(`idempotency_level weakened from ${Level[was.idempotency]} to ${Level[is.idempotency]}`);
    }
  }
  return [...breaks];
}
