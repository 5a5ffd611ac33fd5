// A raw gRPC server reflection client: one ServerReflectionInfo bidi stream over plain grpc-js,
// typed by the reflection proto that @grpc/reflection bundles (v1 or v1alpha), so a test can check
// each protocol version on its own. grpcurl and buf curl try v1 first and fall back to v1alpha only
// when v1 is missing, so they never show whether v1alpha works.
//
//   const answer = await reflect("127.0.0.1:50053", "v1alpha", [
//     { list_services: "" },
//     { file_containing_symbol: "shop.order.v1.OrderService" },
//   ]);
import { createRequire } from "node:module";
import path from "node:path";
import { fromBinary } from "@bufbuild/protobuf";
import { type FileDescriptorProto, FileDescriptorProtoSchema } from "@bufbuild/protobuf/wkt";
import { credentials, type GrpcObject, loadPackageDefinition, Metadata } from "@grpc/grpc-js";
import { loadSync } from "@grpc/proto-loader";

export type ReflectionVersion = "v1" | "v1alpha";

/** One ServerReflectionRequest, its oneof spelled as in the proto. */
export type ReflectionRequest =
  | { list_services: string }
  | { file_containing_symbol: string }
  | { file_by_filename: string };

/** What the server answered to one request. */
export interface ReflectionAnswer {
  /** The oneof field the server set, e.g. `list_services_response`. */
  kind: string;
  /** list_services_response: the service names. */
  services?: string[];
  /** file_descriptor_response: the descriptors, decoded. */
  files?: FileDescriptorProto[];
  /** file_descriptor_response: the descriptors as the server sent them. */
  raw?: Buffer[];
  /** error_response. */
  error?: { code: number; message: string };
}

/** The reflection proto @grpc/reflection ships for a version, e.g. build/proto/grpc/reflection/v1alpha. */
export function reflectionProto(version: ReflectionVersion): string {
  const require = createRequire(import.meta.url);
  const root = path.dirname(require.resolve("@grpc/reflection/package.json"));
  return path.join(root, "build", "proto", "grpc", "reflection", version, "reflection.proto");
}

interface RawResponse {
  message_response: string;
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

/**
 * Opens `/grpc.reflection.<version>.ServerReflection/ServerReflectionInfo` on `address`, sends the
 * requests one by one (each after the previous answer), half-closes and returns the answers.
 */
export async function reflect(
  address: string,
  version: ReflectionVersion,
  requests: readonly ReflectionRequest[],
  timeoutMs = 10_000,
  channel = credentials.createInsecure(),
  metadata = new Metadata(),
): Promise<ReflectionAnswer[]> {
  const definition = loadSync(reflectionProto(version), {
    keepCase: true,
    oneofs: true,
    defaults: false,
  });
  const pkg = (loadPackageDefinition(definition).grpc as GrpcObject).reflection as GrpcObject;
  // biome-ignore lint/suspicious/noExplicitAny: a client class made at run time from the proto.
  const Client = (pkg[version] as GrpcObject).ServerReflection as any;
  const client = new Client(address, channel);
  try {
    const stream = client.ServerReflectionInfo(metadata, {
      deadline: Date.now() + timeoutMs,
    });
    const answers: ReflectionAnswer[] = [];
    await new Promise<void>((resolve, reject) => {
      let next = 0;
      const send = () => {
        const request = requests[next++];
        if (request) stream.write(request);
        else stream.end();
      };
      stream.on("data", (raw: RawResponse) => {
        answers.push(decode(raw));
        send();
      });
      stream.on("error", reject);
      stream.on("end", resolve);
      send();
    });
    return answers;
  } finally {
    client.close();
  }
}

function decode(raw: RawResponse): ReflectionAnswer {
  const answer: ReflectionAnswer = { kind: raw.message_response };
  if (raw.list_services_response) {
    answer.services = raw.list_services_response.service.map((s) => s.name);
  }
  if (raw.file_descriptor_response) {
    answer.raw = raw.file_descriptor_response.file_descriptor_proto;
    answer.files = raw.file_descriptor_response.file_descriptor_proto.map((bytes) =>
      fromBinary(FileDescriptorProtoSchema, bytes),
    );
  }
  if (raw.error_response) {
    answer.error = {
      code: raw.error_response.error_code,
      message: raw.error_response.error_message,
    };
  }
  return answer;
}
