#!/usr/bin/env bash
# Copy local model directories onto a PersistentVolumeClaim, so that InferenceServices can read
# them with storageUri pvc://PVC/FOLDER. Needs only kubectl and a PVC in the namespace
# (`kubectl apply -n NAMESPACE -k manifests/models/` creates maas-models).
#
#   scripts/models_to_pvc.sh [-n NAMESPACE] [-c PVC] [-i IMAGE] [-t TIMEOUT] [-k] LOCAL_DIR=FOLDER...
#
# For example, the layout the README's examples read (one folder per example model):
#   scripts/models_to_pvc.sh -n maas -c maas-models .models/digits-cnn=image \
#     .models/digits-lstm=sequence .models/minilm=transformer .models/digits-vae=generative \
#     .models/tiny-gpt=text-generation .models/tiny-chat=chat
#
# It starts a helper pod that mounts the PVC at /mnt/models, and for each pair replaces FOLDER on
# the volume with a copy of LOCAL_DIR (kubectl cp), checks that FOLDER/maas.yaml arrived, then
# deletes the pod (-k keeps it). Running it again replaces the folders it names and nothing else.
# The pod runs as UID 1000 (the predictor's user) with fsGroup 1000, so the files stay readable by
# the predictor; the image needs `tar` (kubectl cp uses it) and `sleep`.
set -euo pipefail

NAMESPACE="default"
PVC="maas-models"
IMAGE="busybox:1.36"
TIMEOUT="180s"
KEEP=0
MOUNT="/mnt/models"

usage() {
  cat <<'EOF'
usage: scripts/models_to_pvc.sh [-n NAMESPACE] [-c PVC] [-i IMAGE] [-t TIMEOUT] [-k] LOCAL_DIR=FOLDER...

Copy each local model directory LOCAL_DIR (it holds a maas.yaml) to FOLDER on the PVC, for
storageUri pvc://PVC/FOLDER. An existing FOLDER is replaced.

  -n NAMESPACE  namespace of the PVC (default: default)
  -c PVC        PersistentVolumeClaim to fill (default: maas-models; it must exist:
                kubectl apply -n NAMESPACE -k manifests/models/)
  -i IMAGE      image of the helper pod; needs tar and sleep (default: busybox:1.36)
  -t TIMEOUT    how long to wait for the helper pod to start (default: 180s)
  -k            keep the helper pod PVC-loader afterwards (default: delete it)
  -h            show this help
EOF
}

die() {
  printf 'models_to_pvc: %s\n' "$1" >&2
  exit "${2:-1}"
}

usage_error() {
  printf 'models_to_pvc: %s\n' "$1" >&2
  usage >&2
  exit 2
}

while getopts ":n:c:i:t:kh" option; do
  case "${option}" in
    n) NAMESPACE="${OPTARG}" ;;
    c) PVC="${OPTARG}" ;;
    i) IMAGE="${OPTARG}" ;;
    t) TIMEOUT="${OPTARG}" ;;
    k) KEEP=1 ;;
    h) usage; exit 0 ;;
    :) usage_error "-${OPTARG} needs a value" ;;
    *) usage_error "unknown option -${OPTARG}" ;;
  esac
done
shift $((OPTIND - 1))
[[ $# -gt 0 ]] || usage_error "no LOCAL_DIR=FOLDER pairs given"

DNS_LABEL='^[a-z0-9]([-a-z0-9]*[a-z0-9])?$'
[[ "${NAMESPACE}" =~ ${DNS_LABEL} ]] || usage_error "namespace '${NAMESPACE}' is not a DNS label"
[[ "${PVC}" =~ ^[a-z0-9]([-.a-z0-9]*[a-z0-9])?$ ]] || usage_error "PVC name '${PVC}' is not a DNS subdomain"
POD="${PVC}-loader"

SOURCES=()
FOLDERS=()
FOLDER_PATTERN='^[A-Za-z0-9_][-A-Za-z0-9_.]*(/[A-Za-z0-9_][-A-Za-z0-9_.]*)*$'
for pair in "$@"; do
  [[ "${pair}" == *=* ]] || usage_error "'${pair}' is not LOCAL_DIR=FOLDER"
  source_dir="${pair%=*}"
  folder="${pair##*=}"
  [[ -n "${source_dir}" ]] || usage_error "'${pair}': LOCAL_DIR is empty"
  [[ "${folder}" =~ ${FOLDER_PATTERN} && "/${folder}/" != */../* ]] \
    || usage_error "'${pair}': FOLDER must be a relative path of plain names (letters, digits, - _ .), not '${folder}'"
  [[ -d "${source_dir}" ]] || usage_error "'${pair}': ${source_dir} is not a directory"
  [[ -f "${source_dir}/maas.yaml" ]] || usage_error "'${pair}': ${source_dir} has no maas.yaml (not a model directory)"
  for seen in "${FOLDERS[@]+"${FOLDERS[@]}"}"; do
    [[ "${seen}" != "${folder}" ]] || usage_error "FOLDER '${folder}' is given twice"
  done
  SOURCES+=("${source_dir}")
  FOLDERS+=("${folder}")
done

command -v kubectl >/dev/null || die "kubectl is not installed"

cleanup() {
  if [[ "${KEEP}" == "1" ]]; then
    printf 'keeping pod %s/%s (kubectl delete pod %s -n %s removes it)\n' "${NAMESPACE}" "${POD}" "${POD}" "${NAMESPACE}"
  else
    kubectl delete pod "${POD}" -n "${NAMESPACE}" --ignore-not-found --wait=false >/dev/null || true
  fi
}

kubectl get pvc "${PVC}" -n "${NAMESPACE}" -o name >/dev/null \
  || die "no PVC ${PVC} in namespace ${NAMESPACE} (create it: kubectl apply -n ${NAMESPACE} -k manifests/models/)"
kubectl delete pod "${POD}" -n "${NAMESPACE}" --ignore-not-found --wait
trap cleanup EXIT
kubectl apply -n "${NAMESPACE}" -f - <<EOF
apiVersion: v1
kind: Pod
metadata:
  name: ${POD}
  labels:
    app.kubernetes.io/name: maas
    app.kubernetes.io/component: model-loader
    app.kubernetes.io/part-of: maas
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  securityContext:
    runAsNonRoot: true
    runAsUser: 1000
    runAsGroup: 1000
    fsGroup: 1000
    seccompProfile:
      type: RuntimeDefault
  containers:
    - name: loader
      image: ${IMAGE}
      command: ["sleep", "3600"]
      securityContext:
        allowPrivilegeEscalation: false
        readOnlyRootFilesystem: true
        capabilities:
          drop: ["ALL"]
      volumeMounts:
        - name: models
          mountPath: ${MOUNT}
  volumes:
    - name: models
      persistentVolumeClaim:
        claimName: ${PVC}
EOF
kubectl wait --for=condition=Ready "pod/${POD}" -n "${NAMESPACE}" --timeout="${TIMEOUT}"

for i in "${!FOLDERS[@]}"; do
  source_dir="${SOURCES[$i]}"
  target="${MOUNT}/${FOLDERS[$i]}"
  printf '%s -> pvc://%s/%s\n' "${source_dir}" "${PVC}" "${FOLDERS[$i]}"
  # kubectl cp copies INTO a directory that exists, so the target goes first: a rerun replaces it.
  kubectl exec "${POD}" -n "${NAMESPACE}" -c loader -- rm -rf "${target}"
  if [[ "${FOLDERS[$i]}" == */* ]]; then
    kubectl exec "${POD}" -n "${NAMESPACE}" -c loader -- mkdir -p "${target%/*}"
  fi
  kubectl cp "${source_dir}" "${NAMESPACE}/${POD}:${target}" -c loader
  kubectl exec "${POD}" -n "${NAMESPACE}" -c loader -- test -f "${target}/maas.yaml" \
    || die "${target}/maas.yaml is missing on the volume after the copy"
done
printf 'pvc://%s in %s now holds: %s\n' "${PVC}" "${NAMESPACE}" "${FOLDERS[*]}"
