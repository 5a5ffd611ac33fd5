// The thread of stallingLister (stalling-lister.ts).
import { parentPort, workerData } from "node:worker_threads";
import * as grpc from "@grpc/grpc-js";
import { ListProductsRequest } from "../../gen/ts/shop/product/v1/product.js";

const { address, requestId, stallMs } = workerData as {
  address: string;
  requestId: string;
  stallMs: number;
};
const client = new grpc.Client(address, grpc.credentials.createInsecure());
const metadata = new grpc.Metadata();
metadata.set("x-request-id", requestId);
const request = ListProductsRequest.fromPartial({ pageSize: 1000 });
const call = client.makeUnaryRequest(
  "/shop.product.v1.ProductService/ListProducts",
  (message: typeof request) => Buffer.from(ListProductsRequest.encode(message).finish()),
  (bytes: Buffer) => bytes,
  request,
  metadata,
  (error) => {
    parentPort?.postMessage(
      error ? { code: error.code, details: error.details } : { code: grpc.status.OK, details: "" },
    );
    client.close();
  },
);
call.on("metadata", () => {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, stallMs);
});
