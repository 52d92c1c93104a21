#!/usr/bin/env bash
# Debian packages the tests use: chromium (the /status page browser test)
# prometheus (promtool checks the alert rules), mmdebstrap and buildah (the
# container image). Installed only when
# missing; needs root, as on CI and the developers' machines.
set -euo pipefail
need=()
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
# the container image: its Debian base (mmdebstrap) and the image build and run (buildah)
command -v mmdebstrap >/dev/null 2>&1 || need+=(mmdebstrap)
command -v buildah >/dev/null 2>&1 || need+=(buildah)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
  echo "system-deps: need ${need[*]} (Debian packages); run as root or install them" >&2
  exit 1
fi
echo "system-deps: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
