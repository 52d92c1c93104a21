#!/usr/bin/env bash
# Build (once) and locate the Helm binary the chart tests use, from its Go module.
#
#   scripts/helm.sh build     build into the cache if missing; print the binary path
#   scripts/helm.sh path      print the binary path (may not exist yet)
#   scripts/helm.sh version   print the pinned helm.sh/helm/v3 version
#   scripts/helm.sh rebuild   force a fresh build
#
# The version is pinned by our tool module tools/helm/go.mod (+ go.sum). The binary lands in
#   ${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler/bin/helm-<version>
# and Go's module/build caches keep the downloads. Only the last line of stdout is the
# path; progress goes to stderr. Cold (2 cores): a few minutes; warm: instant.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tooldir="$(cd "$here/../tools/helm" && pwd)"
pkg="helm.sh/helm/v3/cmd/helm"

version="$(awk '$1 == "helm.sh/helm/v3" { print $2; exit }' "$tooldir/go.mod")"
if [[ -z "$version" ]]; then
  echo "helm.sh: cannot find the helm.sh/helm/v3 version in $tooldir/go.mod" >&2
  exit 1
fi

bindir="${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler/bin"
bin="$bindir/helm-$version"

build() {
  local force="${1:-}"
  if [[ -z "$force" && -x "$bin" ]]; then echo "$bin"; return 0; fi
  command -v go >/dev/null 2>&1 || { echo "helm.sh: 'go' not found on PATH" >&2; exit 1; }
  mkdir -p "$bindir"
  exec 9>"$bindir/.helm-$version.lock"
  command -v flock >/dev/null 2>&1 && flock 9
  if [[ -z "$force" && -x "$bin" ]]; then echo "$bin"; return 0; fi
  local tmp="$bin.tmp.$$"
  trap 'rm -f "$tmp"' EXIT
  echo "helm.sh: building Helm $version -> $bin" >&2
  local t0=$SECONDS
  (
    cd "$tooldir"
    # Stamp the version and the default Kubernetes version (`helm template` without
    # --kube-version) as Helm's release Makefile does: client-go v0.X is Kubernetes 1.X.
    # -mod=readonly: go.sum must be complete, so what we build is what is committed.
    local kminor
    kminor="$(go list -mod=readonly -f '{{.Version}}' -m k8s.io/client-go | cut -d. -f2)"
    local x=""
    for p in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
      x+=" -X $p.k8sVersionMajor=1 -X $p.k8sVersionMinor=$kminor"
    done
    go build -mod=readonly -buildvcs=false \
      -ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$version$x" \
      -o "$tmp" "$pkg"
  ) >&2
  mv -f "$tmp" "$bin"
  trap - EXIT
  echo "helm.sh: built in $((SECONDS - t0))s" >&2
  echo "$bin"
}

case "${1:-build}" in
  build) build ;;
  rebuild) build force ;;
  path) echo "$bin" ;;
  version) echo "$version" ;;
  *) echo "usage: $0 {build|rebuild|path|version}" >&2; exit 2 ;;
esac
