#!/usr/bin/env bash
# Build (once) and locate the real OpenTelemetry Collector used by the tests: one
# binary with every component they need (tools/otelcol/manifest.yaml), built with
# the Collector builder go.opentelemetry.io/collector/cmd/builder@v0.161.0.
#
#   scripts/otelcol.sh build     build into the cache if missing; print the binary path
#   scripts/otelcol.sh path      print the binary path (may not exist yet)
#   scripts/otelcol.sh rebuild   force a fresh build
#   scripts/otelcol.sh source M  print the source directory of module M@v0.161.0
#                                (the Collector's own tests and testdata)
#
# The binary is named after a hash of the manifest, so editing the manifest builds a
# new one; Go's module and build caches keep the downloads. Only the last line of
# stdout is the path; progress goes to stderr.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/gotool.sh
source "$here/lib/gotool.sh"
manifest="$here/../tools/otelcol/manifest.yaml"
builder_version=v0.161.0
cache="${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler"
bindir="$gotool_bindir"
hash="$(sha1sum "$manifest" | cut -c1-12)"
bin="$bindir/otelcol-traceo-$hash"

compile() {   # $1: where to write the binary
  local builder="$bindir/ocb-$builder_version"
  if [[ ! -x "$builder" ]]; then
    echo "otelcol.sh: installing the Collector builder $builder_version"
    local gobin; gobin="$(mktemp -d)"
    GOBIN="$gobin" go install "go.opentelemetry.io/collector/cmd/builder@$builder_version"
    mv -f "$gobin/builder" "$builder"; rmdir "$gobin"
  fi
  local src="$cache/otelcol-src-$hash"
  rm -rf "$src"; mkdir -p "$src"
  sed "/^dist:/a\\  output_path: $src" "$manifest" > "$src.manifest.yaml"
  "$builder" --config "$src.manifest.yaml"
  mv -f "$src/otelcol-traceo" "$1"
  rm -rf "$src" "$src.manifest.yaml"
}

build() {
  gotool_build otelcol.sh "$bin" "$bindir/.otelcol-$hash.lock" "the Collector" compile "${1:-}"
}

source_dir() {
  local mod="$1"
  go mod download -json "$mod@v0.161.0" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p'
}

case "${1:-build}" in
  build) build ;;
  rebuild) build force ;;
  path) echo "$bin" ;;
  source) source_dir "${2:?module path}" ;;
  *) echo "usage: $0 {build|rebuild|path|source MODULE}" >&2; exit 2 ;;
esac
