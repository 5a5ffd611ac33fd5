#!/usr/bin/env bash
# Regenerates everything derived from proto/: the TypeScript, Go and Python stubs, the descriptor
# set that reflection and Envoy's transcoder load, the API reference (docs/api) and the deployment
# files (Envoy, compose).
# `scripts/generate.sh DIR` writes the generated code under DIR instead of the repo (the drift
# test compares the two).
#
# Needs node_modules (npm ci); provisions .tools (protoc-gen-go, protoc-gen-go-grpc, the
# grpcio-tools venv) through scripts/tools.sh. Only the generated subtrees are rewritten:
# gen/go/go.mod, go.sum and gen/python/pyproject.toml are kept by hand, and copied when DIR is
# not the repo.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$root}
cd "$root"
buf=node_modules/.bin/buf
python=.tools/venv/bin/python

[[ -x "$buf" ]] || { echo "generate: missing $buf; run npm ci" >&2; exit 1; }
# The pinned Go plugins and the grpcio-tools venv; milliseconds when they are already there.
bash scripts/tools.sh go-plugins python

# TypeScript (buf.gen.yaml: ts-proto into gen/ts).
"$buf" generate --output "$out"

# Go: the module github.com/shopmesh/shopmesh/gen/go, one package per proto package
# (shop/user/v1 -> package userv1). Managed mode supplies go_package, so the protos carry none;
# google/api keeps its own go_package and resolves to google.golang.org/genproto. This is a
# template of its own because it takes only proto/ as input: buf.gen.yaml also feeds
# google/rpc/*.proto to ts-proto, and Go must use genproto's status/errdetails, not a copy.
# `out: gen/go/shop` keeps `clean` away from the hand-written go.mod and go.sum.
# The managed block this template and the API reference's share.
managed='managed:
  enabled: true
  disable:
    - path: google
  override:
    - file_option: go_package_prefix
      value: github.com/shopmesh/shopmesh/gen/go'
go_template=$(
  cat <<YAML
version: v2
clean: true
$managed
plugins:
  - local: .tools/bin/protoc-gen-go
    out: gen/go/shop
    opt: module=github.com/shopmesh/shopmesh/gen/go/shop
  - local: .tools/bin/protoc-gen-go-grpc
    out: gen/go/shop
    opt: module=github.com/shopmesh/shopmesh/gen/go/shop
YAML
)
"$buf" generate proto --template "$go_template" --output "$out"

# Python: grpcio-tools into gen/python, a source root whose package `shop` mirrors proto/shop
# (`from shop.order.v1 import order_pb2, order_pb2_grpc`). google.api and google.rpc come from
# the googleapis-common-protos package, google.protobuf from protobuf.
py_out="$out/gen/python"
rm -rf "$py_out/shop"
mkdir -p "$py_out"
mapfile -t protos < <(cd proto && find shop -name '*.proto' | LC_ALL=C sort)
"$python" -m grpc_tools.protoc \
  -I proto -I node_modules/google-proto-files \
  --python_out="$py_out" --pyi_out="$py_out" --grpc_python_out="$py_out" \
  "${protos[@]}"
find "$py_out/shop" -type d -exec touch {}/__init__.py \;
touch "$py_out/shop/py.typed"

# The API reference in docs/api: Markdown of every service, rpc, message, field and enum with its
# comments and REST mapping (protoc-gen-doc with scripts/api-reference.tmpl), and OpenAPI v2 of
# the REST API with field behaviours (required, read-only) from google.api.field_behavior
# (protoc-gen-openapiv2). Both see every file at once (strategy: all).
docs_template=$(
  cat <<YAML
version: v2
clean: true
# protoc-gen-openapiv2 wants a go_package, as the Go template above supplies it.
$managed
plugins:
  - local: .tools/bin/protoc-gen-doc
    out: docs/api
    opt: scripts/api-reference.tmpl,README.md
    strategy: all
  - local: .tools/bin/protoc-gen-openapiv2
    out: docs/api/openapi
    opt:
      - output_format=yaml
      - allow_merge=true
      - merge_file_name=shopmesh
      - json_names_for_fields=false
      - disable_default_errors=false
      # List update_mask as the query parameter the edge needs: hidden (the default), a PATCH
      # without it is refused, since Envoy does not fill it from the body as grpc-gateway does.
      - allow_patch_feature=false
    strategy: all
YAML
)
"$buf" generate proto --template "$docs_template" --output "$out"
node_modules/.bin/tsx scripts/openapi-bodies.ts "$out/docs/api/openapi/shopmesh.swagger.yaml"

# The hand-written package files, so that DIR/gen is complete and comparable with gen/.
if [[ "$(cd "$out" && pwd)" != "$root" ]]; then
  for f in gen/go/go.mod gen/go/go.sum gen/python/pyproject.toml gen/python/.gitignore; do
    cp "$f" "$out/$f"
  done
fi

# The descriptor set: our protos, everything they import, and google.rpc's status and error
# details so reflection clients (grpcurl) can decode grpc-status-details-bin, grpc.health.v1
# so they can call health checks, and grpc.reflection v1 and v1alpha, the schema of reflection
# itself.
mkdir -p "$out/gen/descriptor"
"$buf" build \
  --path proto/shop \
  --path node_modules/google-proto-files/google/rpc/status.proto \
  --path node_modules/google-proto-files/google/rpc/error_details.proto \
  --path node_modules/grpc-health-check/proto/health/v1/health.proto \
  --path node_modules/@grpc/reflection/build/proto/grpc/reflection/v1/reflection.proto \
  --path node_modules/@grpc/reflection/build/proto/grpc/reflection/v1alpha/reflection.proto \
  -o "$out/gen/descriptor/shop.binpb"

# The deployment files derived from the descriptor set and the registry (Envoy's routes, compose),
# when writing to the repo itself; the drift test for them is test/envoy-config.test.ts.
if [[ "$(cd "$out" && pwd)" == "$root" ]]; then
  node_modules/.bin/tsx deploy/generate.ts
fi
