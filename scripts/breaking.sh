#!/usr/bin/env bash
# The contract-breaking gate, with buf's FILE rules.
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

case ${1:-} in
  --release)
    "$buf" build proto -o "$baseline"
    echo "breaking: released the current proto/ as $baseline; commit it"
    exit 0
    ;;
  --against-ref)
    ref=${2:?usage: breaking.sh --against-ref REF}
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    git archive "$ref" buf.yaml proto | tar -x -C "$tmp"
    ln -s "$root/node_modules" "$tmp/node_modules"
    baseline=$tmp/against.binpb
    "$buf" build "$tmp/proto" -o "$baseline"
    ;;
  ?*) input=$1 ;;
esac

# The proto module is the input; the workspace config above it resolves the google imports.
"$buf" breaking "$input/proto" --against "$baseline"
