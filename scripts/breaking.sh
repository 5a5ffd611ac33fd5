#!/usr/bin/env bash
# The contract-breaking gate: buf's FILE rules, then our own checks of what those rules leave out
# (scripts/contract-breaks.ts: REST bindings, REQUIRED request fields, idempotency weakened).
#   scripts/breaking.sh [DIR]              compare DIR (default: the repo) against the released
#                                          contract, contract/released.binpb.
#   scripts/breaking.sh --against-ref REF  compare the repo against proto/ as it is at git REF,
#                                          for example a pull request's base branch.
#   scripts/breaking.sh --release          make the current proto/ the released contract. Only when
#                                          a release is cut on purpose; commit the file with it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
buf=$root/node_modules/.bin/buf
baseline=contract/released.binpb
input=.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case ${1:-} in
  --release)
    "$buf" build proto -o "$baseline"
    echo "breaking: released the current proto/ as $baseline; commit it"
    exit 0
    ;;
  --against-ref)
    ref=${2:?usage: breaking.sh --against-ref REF}
    if ! git rev-parse --verify --quiet "$ref^{commit}" >/dev/null; then
      echo "breaking: no commit named \"$ref\" in this checkout (fetch it first?)" >&2
      exit 2
    fi
    git archive "$ref" buf.yaml proto | tar -x -C "$tmp"
    ln -s "$root/node_modules" "$tmp/node_modules"
    baseline=$tmp/against.binpb
    "$buf" build "$tmp/proto" -o "$baseline"
    ;;
  ?*) input=$1 ;;
esac

# The proto module is the input; the workspace config above it resolves the google imports.
status=0
"$buf" breaking "$input/proto" --against "$baseline" || status=$?
"$buf" build "$input/proto" -o "$tmp/current.binpb"
"$root/node_modules/.bin/tsx" scripts/contract-breaks.ts "$baseline" "$tmp/current.binpb" || status=$?
exit "$status"
