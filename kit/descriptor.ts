import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** The descriptor set `npm run generate` builds: our protos with all their imports. */
export const descriptorPath = fileURLToPath(
  new URL("../gen/descriptor/shop.binpb", import.meta.url),
);

let cached: Buffer | undefined;

export function descriptorSet(): Buffer {
  cached ??= readFileSync(descriptorPath);
  return cached;
}
