#!/usr/bin/env bash
# Build (once) and locate the real Jaeger v2 binary used by the integration tests.
#
#   scripts/jaeger.sh build     build into the cache if missing; print the binary path
#   scripts/jaeger.sh path      print the binary path (may not exist yet)
#   scripts/jaeger.sh version   print the pinned Jaeger module version
#   scripts/jaeger.sh rebuild   force a fresh build (e.g. after editing tools/jaeger/go.mod
#                               without changing the Jaeger version)
#
# The Jaeger version is pinned by our tool module tools/jaeger/go.mod (+ go.sum), which
# also carries Jaeger's own `replace` directives. The binary lands in
#   ${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler/bin/jaeger-<version>
# and Go's module/build caches keep the downloads, so nothing large goes into the repo.
# Only the last line of stdout is the path; all progress goes to stderr.
#
# Cold (empty Go caches, 2 cores): several minutes; warm: instant (binary already there).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=lib/gotool.sh
source "$here/lib/gotool.sh"
tooldir="$(cd "$here/../tools/jaeger" && pwd)"
pkg="github.com/jaegertracing/jaeger/cmd/jaeger"
version="$(gotool_module_version jaeger.sh "$tooldir/go.mod" github.com/jaegertracing/jaeger)"
bin="$gotool_bindir/jaeger-$version"

compile() {   # $1: where to write the binary
  cd "$tooldir"
  # Stamp `jaeger version` with the release name (module v1.x.y ships Jaeger v2.a.b).
  local stamp="$version" moddir
  if moddir="$(go mod download -json github.com/jaegertracing/jaeger |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')" \
    && [[ -n "$moddir" && -f "$moddir/CHANGELOG.md" ]]; then
    stamp="$(awk -v v="$version" '$1 == v && $2 == "/" { print $3; exit }' "$moddir/CHANGELOG.md")"
    stamp="${stamp:-$version}"
  fi
  # -mod=readonly: go.sum must be complete, so what we build is exactly what is committed.
  go build -mod=readonly -buildvcs=false \
    -ldflags="-s -w -X github.com/jaegertracing/jaeger/internal/version.latestVersion=$stamp" \
    -o "$1" "$pkg"
}

build() {
  gotool_build jaeger.sh "$bin" "$gotool_bindir/.jaeger-$version.lock" "Jaeger $version" compile "${1:-}"
}

case "${1:-build}" in
  build) build ;;
  rebuild) build force ;;
  path) echo "$bin" ;;
  version) echo "$version" ;;
  *)
    echo "usage: $0 {build|rebuild|path|version}" >&2
    exit 2
    ;;
esac
