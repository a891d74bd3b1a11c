#!/usr/bin/env bash
# buf lint, then buf breaking against main's protos when main has any (CI clones have main).
set -euo pipefail
cd "$(dirname "$0")/.."
BUF=node_modules/.bin/buf
$BUF lint
$BUF format --diff --exit-code proto
if git rev-parse --verify -q main >/dev/null && git cat-file -e main:proto 2>/dev/null; then
  base=$(mktemp -d)
  trap 'rm -rf "$base"' EXIT
  git archive main proto | tar -x -C "$base"
  cp -r third_party "$base/"
  cp buf.yaml "$base/"
  $BUF breaking --against "$base"
  echo "buf breaking: compatible with main"
fi
