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
# shellcheck source=lib/gotool.sh
source "$here/lib/gotool.sh"
tooldir="$(cd "$here/../tools/helm" && pwd)"
pkg="helm.sh/helm/v3/cmd/helm"
version="$(gotool_module_version helm.sh "$tooldir/go.mod" helm.sh/helm/v3)"
bin="$gotool_bindir/helm-$version"

compile() {   # $1: where to write the binary
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
    -o "$1" "$pkg"
}

build() {
  gotool_build helm.sh "$bin" "$gotool_bindir/.helm-$version.lock" "Helm $version" compile "${1:-}"
}

case "${1:-build}" in
  build) build ;;
  rebuild) build force ;;
  path) echo "$bin" ;;
  version) echo "$version" ;;
  *) echo "usage: $0 {build|rebuild|path|version}" >&2; exit 2 ;;
esac
