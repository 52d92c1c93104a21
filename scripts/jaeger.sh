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
tooldir="$(cd "$here/../tools/jaeger" && pwd)"
pkg="github.com/jaegertracing/jaeger/cmd/jaeger"

version="$(awk '$1 == "github.com/jaegertracing/jaeger" { print $2; exit }' "$tooldir/go.mod")"
if [[ -z "$version" ]]; then
  echo "jaeger.sh: cannot find the github.com/jaegertracing/jaeger version in $tooldir/go.mod" >&2
  exit 1
fi

bindir="${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler/bin"
bin="$bindir/jaeger-$version"

build() {
  local force="${1:-}"
  if [[ -z "$force" && -x "$bin" ]]; then
    echo "$bin"
    return 0
  fi
  if ! command -v go >/dev/null 2>&1; then
    echo "jaeger.sh: 'go' not found on PATH; Go is needed to build Jaeger $version" >&2
    exit 1
  fi
  mkdir -p "$bindir"
  # Serialize concurrent builds (parallel test workers); re-check after taking the lock.
  exec 9>"$bindir/.jaeger-$version.lock"
  if command -v flock >/dev/null 2>&1; then
    flock 9
  fi
  if [[ -z "$force" && -x "$bin" ]]; then
    echo "$bin"
    return 0
  fi
  local tmp="$bin.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  echo "jaeger.sh: building Jaeger $version -> $bin (first time takes minutes)" >&2
  local t0=$SECONDS
  (
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
      -o "$tmp" "$pkg"
  ) >&2
  mv -f "$tmp" "$bin"
  trap - EXIT
  echo "jaeger.sh: built in $((SECONDS - t0))s" >&2
  echo "$bin"
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
