#!/usr/bin/env bash
# Deletes the laptop cluster scripts/cluster-up.sh made, with everything in it.
#
#   ./scripts/cluster-down.sh kind|minikube
#
# THINMESH_CLUSTER names the cluster or profile, as for cluster-up.sh. The Istio download in
# ${XDG_CACHE_HOME:-~/.cache}/thinmesh is kept for next time.
set -euo pipefail

usage() {
  echo "usage: $0 kind|minikube" >&2
  exit 2
}

[ "$#" -eq 1 ] || usage
case "$1" in
  kind)
    kind delete cluster --name "${THINMESH_CLUSTER:-thinmesh}"
    ;;
  minikube)
    minikube delete -p "${THINMESH_CLUSTER:-minikube}"
    ;;
  *)
    usage
    ;;
esac
