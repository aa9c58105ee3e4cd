#!/usr/bin/env bash
# End-to-end on a real cluster (kind), for machines with a Docker daemon:
#   1. build the image from the Dockerfile and load it into a fresh kind cluster;
#   2. run the Mixpeek emulator in the cluster (docs/quickstart/emulator.yaml, same image);
#   3. helm install the chart with a default credentials Secret pointing at the emulator;
#   4. apply examples/bucketsync-minimal.yaml (its own Secret) and one BucketSync that uses
#      the default Secret, wait for Ready, print them, delete them (finalizer path).
# Without a Docker daemon it prints "skipped: no Docker daemon" and exits 0.
#
# Needs docker, kind, kubectl and helm on PATH (or KIND/KUBECTL/HELM set).
# Env: IMAGE (default mixpeek-operator:e2e), KIND_CLUSTER_NAME (default mixpeek-e2e),
#      KEEP_CLUSTER=1 keeps the cluster afterwards for debugging.
set -euo pipefail

cd "$(dirname "$0")/.."

if ! docker info >/dev/null 2>&1; then
  echo "kind-e2e: skipped: no Docker daemon (docker info failed)"
  exit 0
fi

KIND=${KIND:-kind}
KUBECTL=${KUBECTL:-kubectl}
HELM=${HELM:-helm}
IMAGE=${IMAGE:-mixpeek-operator:e2e}
CLUSTER=${KIND_CLUSTER_NAME:-mixpeek-e2e}
KEEP_CLUSTER=${KEEP_CLUSTER:-0}
OPERATOR_NS=mixpeek-system
APP_NS=mixpeek-e2e
RELEASE=mixpeek-operator
EMULATOR_URL="http://mixpeek-emulator.${OPERATOR_NS}.svc.cluster.local:8099"

for tool in "$KIND" "$KUBECTL" "$HELM"; do
  command -v "$tool" >/dev/null || { echo "kind-e2e: $tool not found on PATH" >&2; exit 1; }
done

log() { printf '\n==> %s\n' "$*"; }

KUBECONFIG_FILE=$(mktemp)
export KUBECONFIG=$KUBECONFIG_FILE

cleanup() {
  local status=$?
  if [[ $status -ne 0 ]]; then
    # Enough to debug a CI failure without the cluster.
    echo "kind-e2e: FAILED (exit $status); diagnostics follow" >&2
    "$KUBECTL" get pods,bucketsyncs -A -o wide >&2 || true
    "$KUBECTL" -n "$APP_NS" describe bucketsyncs >&2 || true
    "$KUBECTL" -n "$OPERATOR_NS" logs "deploy/$RELEASE" --tail=200 >&2 || true
    "$KUBECTL" -n "$OPERATOR_NS" logs deploy/mixpeek-emulator --tail=50 >&2 || true
  fi
  if [[ $KEEP_CLUSTER == 1 ]]; then
    echo "kind-e2e: kept cluster $CLUSTER (kubeconfig: $KUBECONFIG_FILE)"
  else
    "$KIND" delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true
    rm -f "$KUBECONFIG_FILE"
  fi
  exit "$status"
}
trap cleanup EXIT

log "building $IMAGE"
docker build -t "$IMAGE" .

log "creating kind cluster $CLUSTER"
if ! "$KIND" get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  "$KIND" create cluster --name "$CLUSTER" --wait 120s
fi
"$KIND" export kubeconfig --name "$CLUSTER" --kubeconfig "$KUBECONFIG_FILE"
"$KIND" load docker-image "$IMAGE" --name "$CLUSTER"

log "starting the Mixpeek emulator in $OPERATOR_NS"
"$KUBECTL" create namespace "$OPERATOR_NS" --dry-run=client -o yaml | "$KUBECTL" apply -f -
"$KUBECTL" create namespace "$APP_NS" --dry-run=client -o yaml | "$KUBECTL" apply -f -
# A kind-loaded image with a non-latest tag is used as is (pull policy IfNotPresent).
sed "s#image: .*#image: ${IMAGE}#" docs/quickstart/emulator.yaml | "$KUBECTL" -n "$OPERATOR_NS" apply -f -
"$KUBECTL" -n "$OPERATOR_NS" rollout status deploy/mixpeek-emulator --timeout=180s

log "installing the chart with a default credentials Secret"
# sk_test_emulator / default: the emulator's built-in API key and Mixpeek namespace.
for target in "$OPERATOR_NS/mixpeek-default" "$APP_NS/mixpeek-credentials"; do
  "$KUBECTL" -n "${target%/*}" create secret generic "${target#*/}" \
    --from-literal=apiKey=sk_test_emulator --from-literal=namespace=default \
    --from-literal=baseUrl="$EMULATOR_URL" --dry-run=client -o yaml | "$KUBECTL" apply -f -
done
"$HELM" upgrade --install "$RELEASE" charts/mixpeek-operator -n "$OPERATOR_NS" \
  --set image.repository="${IMAGE%:*}" --set image.tag="${IMAGE##*:}" --set image.pullPolicy=Never \
  --set credentials.defaultSecretName=mixpeek-default --set settings.observeInterval=5
"$KUBECTL" -n "$OPERATOR_NS" rollout status "deploy/$RELEASE" --timeout=180s

log "applying BucketSyncs"
"$KUBECTL" -n "$APP_NS" apply -f examples/bucketsync-minimal.yaml
"$KUBECTL" -n "$APP_NS" apply -f - <<'YAML'
apiVersion: mixpeek.com/v1alpha1
kind: BucketSync
metadata:
  name: demo-default-credentials
spec:
  bucketId: bkt_demo
  connectionId: conn_s3_demo
  sourcePath: demo-bucket/images
YAML
"$KUBECTL" -n "$APP_NS" wait --for=condition=Ready bucketsync --all --timeout=180s
"$KUBECTL" -n "$APP_NS" get bucketsyncs -o wide

log "deleting them (the operator removes the remote syncs and its finalizer)"
"$KUBECTL" -n "$APP_NS" delete bucketsyncs --all --timeout=120s

echo "kind-e2e: passed"
