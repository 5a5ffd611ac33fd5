// Health by service name through the edge (`npm run mesh`, real Envoy and replicas) when the
// caller compresses its messages, as grpc-js does with grpc.default_compression_algorithm: the
// edge reads the name from a gzip or deflate message too, so each public service answers
// SERVING from its own cluster, as it does uncompressed. A check too large to hold is refused as a
// service refuses a message over its limit.
import { credentials } from "@grpc/grpc-js";
import test from "ava";
import {
  type HealthCheckResponse,
  HealthCheckResponse_ServingStatus,
  HealthClient,
} from "../../gen/ts/health/v1/health.js";
import { Code, fromGrpcError, ServiceError } from "../../kit/errors.js";
import { registry } from "../../services/registry.js";
import { domainOf } from "../helpers/bad-input.js";
import { CA } from "../helpers/credentials.js";
import { useMesh } from "../helpers/front-door.js";

const mesh = useMesh();

/** grpc-js's compression algorithms: 1 deflate, 2 gzip. */
const ALGORITHMS = { deflate: 1, gzip: 2 } as const;

for (const [name, algorithm] of Object.entries(ALGORITHMS)) {
  test.serial(`Health/Check through Envoy, ${name}: every public service is SERVING`, async (t) => {
    await mesh.waitHealthy(["user", "product", "order"]);
    const client = new HealthClient(
      mesh.front(),
      credentials.createSsl(CA, null, null, { checkServerIdentity: () => undefined }),
      { "grpc.default_compression_algorithm": algorithm },
    );
    try {
      for (const service of ["", ...registry.publicServices]) {
        const answer = await new Promise<HealthCheckResponse | Error>((resolve) =>
          client.check({ service }, (error, response) => resolve(error ?? response)),
        );
        t.is(
          (answer as HealthCheckResponse).status,
          HealthCheckResponse_ServingStatus.SERVING,
          `"${service}": ${answer instanceof Error ? answer.message : "answered"}`,
        );
      }
    } finally {
      client.close();
    }
  });
}

test.serial(
  "a Health/Check larger than the edge holds to read its name is RESOURCE_EXHAUSTED",
  async (t) => {
    await mesh.waitHealthy(["user", "product", "order"]);
    const client = new HealthClient(
      mesh.front(),
      credentials.createSsl(CA, null, null, { checkServerIdentity: () => undefined }),
    );
    t.teardown(() => client.close());
    const answer = await new Promise<HealthCheckResponse | ServiceError>((resolve) =>
      client.check({ service: "x".repeat(100_000) }, (error, response) =>
        resolve(error ? fromGrpcError(error) : response),
      ),
    );
    t.true(answer instanceof ServiceError, "answered");
    const error = answer as ServiceError;
    t.is(Code[error.code], "RESOURCE_EXHAUSTED", error.message);
    t.is(error.details.reason, "REQUEST_TOO_LARGE");
    t.is(domainOf(error.details), "shopmesh.edge");
  },
);
