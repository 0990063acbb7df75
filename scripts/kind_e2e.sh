#!/usr/bin/env bash
# End-to-end check of maas on a local kind cluster:
#   create the cluster, install cert-manager and KServe in Standard mode, build the predictor
#   image and load it into kind, copy the example models onto a PVC, `helm install` the chart
#   with one model per family, run `helm test`, port-forward each predictor and call it over
#   V1, V2 and gRPC (scripts/call_model.py), then delete the cluster.
#
# NOT RUN IN CI: kind needs a Docker (or Podman) engine, and the machines this project is
# developed and tested on have none. The script is kept correct by reading kind's and KServe's
# documentation (KServe's own hack/setup/quick-install scripts for the Helm chart names and
# settings); run it on a workstation before a release.
#
# Needs: docker, kind (v0.20+), kubectl, helm (v3.8+, for OCI charts), python3 with this project
# installed (`pip install -e '.[dev]'`: the gRPC call uses the kserve package). The reference
# models are trained into $MODELS_DIR when missing (scripts/reference_models.py) and one per
# family goes onto the PVC as image/, sequence/, transformer/, generative/.
#
# Settings (environment):
#   CLUSTER=maas-e2e             kind cluster name
#   KSERVE_VERSION=v0.21.0       KServe release (charts oci://ghcr.io/kserve/charts, 0.20+ names;
#                                for 0.15-0.19 set KSERVE_RESOURCES_CHART=kserve)
#   CERT_MANAGER_VERSION=v1.17.0
#   MODELS_DIR=.models           the example model directories
#   NAMESPACE=maas               namespace of the release and the models
#   KEEP_CLUSTER=0               1 keeps the cluster after the run (for debugging)
set -euo pipefail

CLUSTER="${CLUSTER:-maas-e2e}"
KSERVE_VERSION="${KSERVE_VERSION:-v0.21.0}"
KSERVE_RESOURCES_CHART="${KSERVE_RESOURCES_CHART:-kserve-resources}"
CERT_MANAGER_VERSION="${CERT_MANAGER_VERSION:-v1.17.0}"
MODELS_DIR="${MODELS_DIR:-.models}"
NAMESPACE="${NAMESPACE:-maas}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
IMAGE_REPOSITORY="maas-predictor"
IMAGE_TAG="e2e"
FAMILIES=(image sequence transformer generative)
# the reference model that stands for each family on the PVC
declare -A MODEL_OF=([image]=digits-cnn [sequence]=digits-lstm [transformer]=minilm [generative]=digits-vae)
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PORT_FORWARD_PID=""

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind_e2e: %s\n' "$*" >&2; exit 1; }

cleanup() {
  if [[ -n "${PORT_FORWARD_PID}" ]]; then
    kill "${PORT_FORWARD_PID}" 2>/dev/null || true
  fi
  if [[ "${KEEP_CLUSTER}" == "1" ]]; then
    log "keeping cluster ${CLUSTER} (kind delete cluster --name ${CLUSTER} removes it)"
  else
    log "deleting cluster ${CLUSTER}"
    kind delete cluster --name "${CLUSTER}" || true
  fi
}

preflight() {
  local tool
  for tool in docker kind kubectl helm python3; do
    command -v "${tool}" >/dev/null || die "${tool} is not installed"
  done
  cd "${ROOT}"
  local family
  for family in "${FAMILIES[@]}"; do
    if [[ ! -f "${MODELS_DIR}/${MODEL_OF[${family}]}/maas.yaml" ]]; then
      log "training the reference models into ${MODELS_DIR}"
      python3 scripts/reference_models.py --out "${MODELS_DIR}"
      break
    fi
  done
}

create_cluster() {
  log "creating kind cluster ${CLUSTER}"
  trap cleanup EXIT
  kind create cluster --name "${CLUSTER}" --wait 180s
  kubectl config use-context "kind-${CLUSTER}"
}

install_kserve() {
  log "installing cert-manager ${CERT_MANAGER_VERSION}"
  kubectl apply -f "https://github.com/cert-manager/cert-manager/releases/download/${CERT_MANAGER_VERSION}/cert-manager.yaml"
  kubectl wait --for=condition=Available deployment --all -n cert-manager --timeout=300s

  log "installing KServe ${KSERVE_VERSION} in Standard mode"
  helm upgrade --install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd \
    --version "${KSERVE_VERSION}" --namespace kserve --create-namespace --wait
  helm upgrade --install kserve "oci://ghcr.io/kserve/charts/${KSERVE_RESOURCES_CHART}" \
    --version "${KSERVE_VERSION}" --namespace kserve --wait \
    --set kserve.version="${KSERVE_VERSION}" \
    --set kserve.controller.deploymentMode=Standard
  kubectl wait --for=condition=Available deployment/kserve-controller-manager -n kserve --timeout=300s
}

build_and_load_image() {
  log "building ${IMAGE_REPOSITORY}:${IMAGE_TAG} and loading it into kind"
  docker build -t "${IMAGE_REPOSITORY}:${IMAGE_TAG}" "${ROOT}"
  kind load docker-image "${IMAGE_REPOSITORY}:${IMAGE_TAG}" --name "${CLUSTER}"
}

copy_models() {
  log "copying ${MODELS_DIR} onto the PVC maas-models"
  kubectl create namespace "${NAMESPACE}" --dry-run=client -o yaml | kubectl apply -f -
  kubectl apply -n "${NAMESPACE}" -f - <<'EOF'
apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: maas-models
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 5Gi
---
apiVersion: v1
kind: Pod
metadata:
  name: maas-models-loader
spec:
  containers:
    - name: loader
      image: busybox:1.36
      command: ["sleep", "3600"]
      volumeMounts:
        - name: models
          mountPath: /models
  volumes:
    - name: models
      persistentVolumeClaim:
        claimName: maas-models
EOF
  kubectl wait --for=condition=Ready pod/maas-models-loader -n "${NAMESPACE}" --timeout=180s
  local family
  for family in "${FAMILIES[@]}"; do
    kubectl cp "${MODELS_DIR}/${MODEL_OF[${family}]}" "${NAMESPACE}/maas-models-loader:/models/${family}"
  done
  kubectl delete pod maas-models-loader -n "${NAMESPACE}" --wait
}

install_chart() {
  log "installing the maas chart"
  local values
  values="$(mktemp)"
  {
    echo "image: {repository: ${IMAGE_REPOSITORY}, tag: ${IMAGE_TAG}, pullPolicy: IfNotPresent}"
    echo "runtime:"
    echo "  resources: {requests: {cpu: 250m, memory: 1Gi}, limits: {cpu: '2', memory: 3Gi}}"
    echo "defaults:"
    echo "  deploymentMode: Standard"
    echo "  autoscaling: {class: none, minReplicas: 1, maxReplicas: 1}"
    echo "models:"
    local family
    for family in "${FAMILIES[@]}"; do
      echo "  - {name: e2e-${family}, family: ${family}, storageUri: pvc://maas-models/${family}}"
    done
  } >"${values}"
  helm upgrade --install maas "${ROOT}/helm/maas" --namespace "${NAMESPACE}" -f "${values}"
  rm -f "${values}"
  kubectl wait --for=condition=Ready inferenceservice --all -n "${NAMESPACE}" --timeout=900s
  helm test maas --namespace "${NAMESPACE}" --timeout 5m
}

wait_for_port() {
  local port="$1" try
  for try in $(seq 1 30); do
    if (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  die "port-forward to 127.0.0.1:${port} did not open (${try} tries)"
}

call_models() {
  local family name
  for family in "${FAMILIES[@]}"; do
    name="e2e-${family}"
    log "calling ${name} over V1, V2 and gRPC"
    kubectl port-forward -n "${NAMESPACE}" "service/${name}-predictor" 18080:80 18081:8081 >/dev/null &
    PORT_FORWARD_PID=$!
    wait_for_port 18080
    wait_for_port 18081
    python3 "${ROOT}/scripts/call_model.py" --model "${name}" \
      --http http://127.0.0.1:18080 --grpc 127.0.0.1:18081
    kill "${PORT_FORWARD_PID}"
    wait "${PORT_FORWARD_PID}" 2>/dev/null || true
    PORT_FORWARD_PID=""
  done
}

main() {
  preflight
  create_cluster
  install_kserve
  build_and_load_image
  copy_models
  install_chart
  call_models
  log "all models answered over V1, V2 and gRPC"
}

main "$@"
