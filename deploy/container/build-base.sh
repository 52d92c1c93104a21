#!/usr/bin/env bash
# Build the two base images of deploy/container/Containerfile from Debian packages
# only (no registry is pulled from): a runtime base (minbase + python3) and a build
# base (+ compiler and headers for the Cython extension), both Debian bookworm.
#
#   deploy/container/build-base.sh          build both if missing; print their names
#
# mmdebstrap writes each root filesystem as a tarball, cached in
#   ${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler/container/<name>-<key>.tar
# keyed on this script, so a warm run only re-imports (or finds the image already
# there). buildah turns a tarball into an image (FROM scratch + ADD). Needs root (or
# mmdebstrap's unshare mode), mmdebstrap and buildah: `apt-get install mmdebstrap buildah`.
# Names printed (stdout, one per line): localhost/traceo-sampler-base:<key>,
# localhost/traceo-sampler-build-base:<key>.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
suite=bookworm
key="$(sha1sum "${BASH_SOURCE[0]}" | cut -c1-12)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/traceo-sampler/container"
mkdir -p "$cache"

# Documentation, manual pages and translations are not needed in an image.
slim=(
  --dpkgopt='path-exclude=/usr/share/doc/*'
  --dpkgopt='path-include=/usr/share/doc/*/copyright'
  --dpkgopt='path-exclude=/usr/share/man/*'
  --dpkgopt='path-exclude=/usr/share/info/*'
  --dpkgopt='path-exclude=/usr/share/locale/*'
  --dpkgopt='path-exclude=/usr/share/lintian/*'
)
runtime_pkgs=python3,ca-certificates,tini
build_pkgs=python3,python3-venv,python3-dev,gcc,libc6-dev,ca-certificates

rootfs() {  # name packages -> cached tarball path
  local name="$1" pkgs="$2" tar="$cache/$1-$key.tar"
  if [[ ! -s "$tar" ]]; then
    echo "build-base: mmdebstrap $suite ($pkgs) -> $tar" >&2
    mmdebstrap --quiet --variant=minbase --include="$pkgs" "${slim[@]}" \
      "$suite" "$tar.tmp.$$.tar" >&2   # the .tar suffix picks mmdebstrap's tarball output
    mv -f "$tar.tmp.$$.tar" "$tar"
  fi
  echo "$tar"
}

image() {  # name tarball -> image name
  local img="localhost/$1:$key"
  if ! buildah inspect --type image "$img" >/dev/null 2>&1; then
    echo "build-base: importing $2 as $img" >&2
    local ctr
    ctr="$(buildah from scratch)"
    buildah add --quiet "$ctr" "$2" / >/dev/null
    buildah config --env LANG=C.UTF-8 --cmd /bin/sh "$ctr"
    buildah commit --quiet --rm "$ctr" "$img" >/dev/null
  fi
  echo "$img"
}

exec 9>"$cache/.base-$key.lock"
command -v flock >/dev/null 2>&1 && flock 9
# The two downloads are network-bound: run them side by side.
rootfs traceo-sampler-base "$runtime_pkgs" >"$cache/.runtime.$$" &
rt=$!
build_tar="$(rootfs traceo-sampler-build-base "$build_pkgs")"
wait $rt
runtime_tar="$(cat "$cache/.runtime.$$")"; rm -f "$cache/.runtime.$$"
image traceo-sampler-base "$runtime_tar"
image traceo-sampler-build-base "$build_tar"
