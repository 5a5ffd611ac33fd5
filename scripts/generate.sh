#!/usr/bin/env bash
# Regenerates everything derived from proto/: the TypeScript stubs and the descriptor set that
# reflection and Envoy's transcoder load. `scripts/generate.sh DIR` writes under DIR instead of
# the repo (the drift test compares the two).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
cd "$root"
buf=node_modules/.bin/buf

"$buf" generate --output "$out"

# The descriptor set: our protos, everything they import, and google.rpc's status and error
# details so reflection clients (grpcurl) can decode grpc-status-details-bin.
mkdir -p "$out/gen/descriptor"
"$buf" build \
  --path proto/shop \
  --path node_modules/google-proto-files/google/rpc/status.proto \
  --path node_modules/google-proto-files/google/rpc/error_details.proto \
  -o "$out/gen/descriptor/shop.binpb"
