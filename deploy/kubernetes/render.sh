#!/usr/bin/env bash
# The plain manifests in this folder are `helm template` renders of the chart
# (deploy/helm/traceo-sampler) with its default values, one file per mode, for
# clusters without Helm: `kubectl apply -f deploy/kubernetes/gateway.yaml`.
#
#   deploy/kubernetes/render.sh               rewrite gateway.yaml router.yaml consumer-group.yaml sidecar.yaml
#   deploy/kubernetes/render.sh --stdout MODE print one render (the tests compare it with the file)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
helm="$("$root/scripts/helm.sh" build | tail -1)"
export HELM_CACHE_HOME=/tmp/traceo-helm/cache HELM_CONFIG_HOME=/tmp/traceo-helm/config HELM_DATA_HOME=/tmp/traceo-helm/data

one() {
  echo "# Rendered by deploy/kubernetes/render.sh from deploy/helm/traceo-sampler (mode: $1)."
  echo "# Edit the chart or its values, not this file. Namespace: the one you apply it in."
  "$helm" template traceo-sampler "$root/deploy/helm/traceo-sampler" --kube-version 1.37.0 --set "mode=$1"
}

if [[ "${1:-}" == "--stdout" ]]; then
  one "${2:?mode}"
  exit 0
fi
for mode in gateway router consumer-group sidecar; do
  one "$mode" >"$here/$mode.yaml"
  echo "$here/$mode.yaml"
done
