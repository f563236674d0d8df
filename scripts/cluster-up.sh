#!/usr/bin/env bash
# A laptop cluster for thinmesh: kind or minikube, Istio (installed from
# mesh/istio/install/istio-operator.yaml), Istio's Prometheus, Jaeger and Kiali addons at the
# same pinned Istio version (Kiali configured from mesh/kiali/config.yaml), and the shop
# namespace with sidecar injection on. Running it again skips what is already there.
#
#   ./scripts/cluster-up.sh kind        # a kind cluster "thinmesh" (kube-context kind-thinmesh)
#   ./scripts/cluster-up.sh minikube    # the minikube profile "minikube" (kube-context minikube)
#
# Needs kubectl and curl, plus kind and Docker, or minikube. istioctl and the addon manifests
# come from the Istio release, downloaded once into ${XDG_CACHE_HOME:-~/.cache}/thinmesh.
# Settings (environment): ISTIO_VERSION, THINMESH_CLUSTER (cluster or profile name),
# KIND_NODE_IMAGE, MINIKUBE_CPUS, MINIKUBE_MEMORY.
set -euo pipefail

ISTIO_VERSION="${ISTIO_VERSION:-1.30.5}"
NAMESPACE=shop
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${XDG_CACHE_HOME:-$HOME/.cache}/thinmesh"

usage() {
  echo "usage: $0 kind|minikube" >&2
  exit 2
}
step() { printf '\n==> %s\n' "$*"; }
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "$1 is required: $2" >&2
    exit 1
  fi
}

[ "$#" -eq 1 ] || usage
driver="$1"
need kubectl "https://kubernetes.io/docs/tasks/tools/"
need curl "install it with your package manager"

case "$driver" in
  kind)
    need kind "https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
    need docker "kind runs its nodes as Docker containers"
    cluster="${THINMESH_CLUSTER:-thinmesh}"
    context="kind-$cluster"
    clusters="$(kind get clusters 2>/dev/null || true)"
    if grep -qx "$cluster" <<<"$clusters"; then
      step "kind cluster $cluster exists"
    else
      step "creating the kind cluster $cluster"
      create=(create cluster --name "$cluster" --wait 180s)
      if [ -n "${KIND_NODE_IMAGE:-}" ]; then create+=(--image "$KIND_NODE_IMAGE"); fi
      kind "${create[@]}"
    fi
    ;;
  minikube)
    need minikube "https://minikube.sigs.k8s.io/docs/start/"
    # The default profile: skaffold and Tilt recognise its kube-context ("minikube") and build
    # inside minikube's Docker daemon.
    cluster="${THINMESH_CLUSTER:-minikube}"
    context="$cluster"
    if minikube status -p "$cluster" >/dev/null 2>&1; then
      step "minikube profile $cluster is running"
    else
      step "starting minikube (profile $cluster)"
      minikube start -p "$cluster" --cpus="${MINIKUBE_CPUS:-4}" --memory="${MINIKUBE_MEMORY:-8192}"
    fi
    ;;
  *)
    usage
    ;;
esac
kubectl config use-context "$context" >/dev/null
kube() { kubectl --context "$context" "$@"; }

step "Istio $ISTIO_VERSION (istioctl and the addon manifests)"
istio_dir="$cache/istio-$ISTIO_VERSION"
if [ ! -x "$istio_dir/bin/istioctl" ]; then
  mkdir -p "$cache"
  (cd "$cache" && curl -fsSL https://istio.io/downloadIstio | ISTIO_VERSION="$ISTIO_VERSION" sh -)
fi
istioctl="$istio_dir/bin/istioctl"
"$istioctl" version --remote=false

step "installing Istio from mesh/istio/install/istio-operator.yaml"
"$istioctl" install --context "$context" -y -f "$repo/mesh/istio/install/istio-operator.yaml"
kube -n istio-system rollout status deployment/istiod --timeout=300s
kube -n istio-system rollout status deployment/istio-ingressgateway --timeout=300s

step "addons: Prometheus, Jaeger, Kiali (Istio $ISTIO_VERSION samples/addons)"
for addon in prometheus jaeger kiali; do
  kube apply -f "$istio_dir/samples/addons/$addon.yaml"
done
# Kiali's configuration: the addon's, replaced by mesh/kiali/config.yaml.
kube -n istio-system create configmap kiali \
  --from-file=config.yaml="$repo/mesh/kiali/config.yaml" --dry-run=client -o yaml |
  kube apply -f -
kube -n istio-system rollout restart deployment/kiali
for deployment in prometheus jaeger kiali; do
  kube -n istio-system rollout status "deployment/$deployment" --timeout=300s
done

step "namespace $NAMESPACE with sidecar injection"
kube create namespace "$NAMESPACE" --dry-run=client -o yaml | kube apply -f -
kube label namespace "$NAMESPACE" istio-injection=enabled --overwrite

cat <<EOF

The cluster is ready (kube-context $context). Next:

  skaffold dev            build the services and deploy kustomize/overlays/dev
  tilt up                 the same with live update (press space for the Tilt UI)

Both forward, while they run:
  http://localhost:8080          the shop through the Istio ingress gateway
  http://localhost:20001/kiali   Kiali (graph: namespace shop)
  http://localhost:16686/jaeger  Jaeger

Without them: kubectl -n istio-system port-forward svc/istio-ingressgateway 8080:80
              kubectl -n istio-system port-forward svc/kiali 20001:20001
              kubectl -n istio-system port-forward svc/tracing 16686:80

Canary: npm run canary -- payment 10 --apply   (then promote or rollback)
Remove everything: ./scripts/cluster-down.sh $driver
EOF
