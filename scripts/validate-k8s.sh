#!/usr/bin/env bash
# Validates deploy/k8s with the real Kubernetes API types: `kustomize build` of the base and of
# each overlay, and every object it yields decoded strictly by tools/k8s-validate (an unknown
# field, a duplicate key or a value of the wrong type fails). Both tools come from
# scripts/tools.sh (`npm run tools`).
#
#   bash scripts/validate-k8s.sh          # npm run deploy:validate
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
BIN="$ROOT/.tools/bin"
bash "$ROOT/scripts/tools.sh" k8s
cd "$ROOT"
for dir in deploy/k8s/base deploy/k8s/overlays/*/; do
  dir="${dir%/}"
  printf '== %s\n' "$dir"
  "$BIN/kustomize" build "$dir" | "$BIN/k8s-validate" - | tail -n 1
done
