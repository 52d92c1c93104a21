#!/usr/bin/env bash
# Build the Traceo Sampler image from this checkout, with buildah, from nothing but
# Debian packages and PyPI (no base image is pulled from a registry).
#
#   deploy/container/build.sh          build if missing; print the image name (last line)
#   deploy/container/build.sh --force  build even if an image for these inputs exists
#
# The image is tagged localhost/traceo-sampler:<key>, where <key> hashes everything
# that goes into it (the sources, pyproject.toml, setup.py, deploy/container/, the base
# images), and also localhost/traceo-sampler:dev. A warm run with unchanged inputs
# finds the image and does nothing; a source change reuses the cached dependency layer.
# Older localhost/traceo-sampler:<key> images are removed, so storage does not grow.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
force="${1:-}"
command -v buildah >/dev/null 2>&1 || { echo "build.sh: buildah missing (apt-get install buildah mmdebstrap)" >&2; exit 1; }
mapfile -t bases < <("$root/deploy/container/build-base.sh")
base="${bases[0]}" build_base="${bases[1]}"

# The build context: only what the image needs, copied so local build products
# (.so, generated .c, caches) do not leak in.
ctx="$(mktemp -d)"
trap 'rm -rf "$ctx"' EXIT
(
  cd "$root"
  find pyproject.toml setup.py ext src deploy/container -type f \
    ! -name '*.so' ! -name '*.c' ! -name '*.html' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 |
    sort -z | xargs -0 cp --parents -t "$ctx"
  # src/traceo_sampler/static/*.html is package data
  cp --parents src/traceo_sampler/static/*.html "$ctx"
)
# The runtime dependencies (and the Kafka extra, for consumer-group mode) from pyproject.toml.
"${PYTHON:-python3}" - "$ctx/pyproject.toml" >"$ctx/requirements.txt" <<'PY'
import sys, tomllib
p = tomllib.load(open(sys.argv[1], "rb"))["project"]
print("\n".join(p["dependencies"] + p["optional-dependencies"]["kafka"]))
PY
key="$(
  { (cd "$ctx" && find . -type f -print0 | sort -z | xargs -0 sha1sum)
    for b in "$base" "$build_base"; do buildah inspect --type image --format '{{.FromImageID}}' "$b"; done
  } | sha1sum | cut -c1-12
)"
img="localhost/traceo-sampler:$key"
if [[ "$force" != "--force" ]] && buildah inspect --type image "$img" >/dev/null 2>&1; then
  buildah tag "$img" localhost/traceo-sampler:dev
  echo "$img"
  exit 0
fi
exec 9>"${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler/container/.image.lock"
command -v flock >/dev/null 2>&1 && flock 9
# another build.sh may have built it while this one waited for the lock
if [[ "$force" != "--force" ]] && buildah inspect --type image "$img" >/dev/null 2>&1; then
  buildah tag "$img" localhost/traceo-sampler:dev
  echo "$img"
  exit 0
fi
echo "build.sh: building $img" >&2
t0=$SECONDS
# --format docker: the OCI image format has no HEALTHCHECK; --layers: cache each step;
# --isolation chroot: RUN steps without runc (which this sandbox refuses setrlimit).
buildah build --quiet --layers --format docker --isolation chroot \
  --build-arg BASE="$base" --build-arg BUILD_BASE="$build_base" \
  --secret "id=cacert,src=${PIP_CERT:-/etc/ssl/certs/ca-certificates.crt}" \
  -f "$ctx/deploy/container/Containerfile" -t "$img" "$ctx" >&2
buildah tag "$img" localhost/traceo-sampler:dev
# Drop earlier builds of this checkout's image (not the cached layers of the current one).
buildah images --format '{{.Name}}:{{.Tag}}' | awk -v keep="$img" \
  '$0 ~ /^localhost\/traceo-sampler:[0-9a-f]+$/ && $0 != keep' |
  while read -r old; do buildah rmi "$old" >/dev/null 2>&1 || true; done
echo "build.sh: built in $((SECONDS - t0))s ($(buildah images --format '{{.Size}}' "$img" 2>/dev/null | head -1))" >&2
echo "$img"
