#!/usr/bin/env bash
# The README's "Deploy on Kubernetes", end to end on a local kind cluster.
#
# Every command of that section's `<!-- readme: kind_e2e -->` blocks appears below verbatim and in
# the README's order (tests/deploy/test_readme_deploy.py checks both), between the steps only kind
# needs. The run: create a kind cluster; install cert-manager, Envoy Gateway (the Gateway API
# ingress) and KServe in Standard mode; build the predictor image and load it into kind; copy the
# reference models onto the PVC maas-models (scripts/models_to_pvc.sh); `helm install` the chart
# with helm/examples/values-cpu.yaml and run `helm test`; call every model through the gateway
# (curl, then scripts/call_model.py over V1 and V2) and over gRPC through a port-forward; call the
# chat model's OpenAI API through the gateway (curl, streamed too, and the openai client); apply the
# plain manifests (manifests/) and call them; check the GPU and namespaced kustomizations with a
# server-side dry run; remove everything; delete the cluster.
#
# Where it differs from the README, and why:
#   - REGISTRY=ghcr.io/maas-project: the image is built under its default name and loaded into
#     kind with `kind load docker-image` (kind's equivalent of `docker push`), so the chart's and
#     manifests/images/'s defaults name it unchanged.
#   - No CUDA image and no GPU release (kind has no GPU): `kubectl apply --dry-run=server` checks
#     manifests/gpu/ against the cluster's CRDs and KServe's webhooks instead.
#   - It waits for each port-forward to open and stops it afterwards, and it calls every model,
#     where the README shows one.
#
# NOT RUN IN CI: kind needs a Docker engine, and the machines this project is developed and tested
# on have none. Kept right by reading kind's, KServe's (hack/setup), Envoy Gateway's and Helm's
# documentation; run it on a workstation before a release.
#
# Needs: docker, kind (v0.20+), kubectl, helm (v3.8+: OCI charts), curl (7.76+: --fail-with-body),
# python with this project installed (`pip install -e '.[dev]'`: the reference models are built
# with it, the gRPC call uses the kserve package, the OpenAI call the openai package), and the
# local ports 8000, 8080 and 8081 free.
#
# Settings (environment):
#   CLUSTER=maas-e2e    kind cluster name
#   KEEP_CLUSTER=0      1 keeps the cluster after the run (for debugging)
set -euo pipefail

CLUSTER="${CLUSTER:-maas-e2e}"
KEEP_CLUSTER="${KEEP_CLUSTER:-0}"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The README's variables: NAMESPACE as the README sets it; REGISTRY: the image's default name.
NAMESPACE=maas
REGISTRY=ghcr.io/maas-project
# The chart's models (helm/examples/values-cpu.yaml) and the plain manifests' (manifests/cpu/).
CHART_MODELS=(digits digits-seq minilm digits-vae tiny-gpt tiny-chat)
PLAIN_MODELS=(maas-image maas-sequence maas-transformer maas-generative)
PORT_FORWARDS=()

log() { printf '\n==> %s\n' "$*"; }
die() { printf 'kind_e2e: %s\n' "$*" >&2; exit 1; }

cleanup() {
  local pid
  for pid in "${PORT_FORWARDS[@]+"${PORT_FORWARDS[@]}"}"; do
    kill "${pid}" 2>/dev/null || true
  done
  if [[ "${KEEP_CLUSTER}" == "1" ]]; then
    log "keeping cluster ${CLUSTER} (kind delete cluster --name ${CLUSTER} removes it)"
  else
    log "deleting cluster ${CLUSTER}"
    kind delete cluster --name "${CLUSTER}" || true
  fi
}

port_is_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

wait_for_port() {
  local port="$1" try
  for try in $(seq 1 30); do
    if port_is_open "${port}"; then
      return 0
    fi
    sleep 1
  done
  die "port-forward to 127.0.0.1:${port} did not open (${try} tries)"
}

stop_port_forward() {
  kill "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
}

preflight() {
  local tool port
  for tool in docker kind kubectl helm curl python; do
    command -v "${tool}" >/dev/null || die "${tool} is not installed"
  done
  python -c 'import kserve, openai' 2>/dev/null || die "python cannot import kserve or openai: pip install -e '.[dev]'"
  for port in 8000 8080 8081; do
    ! port_is_open "${port}" || die "local port ${port} is taken (the README's port-forwards use it)"
  done
  cd "${ROOT}"
}

create_cluster() {
  log "creating kind cluster ${CLUSTER}"
  trap cleanup EXIT
  kind create cluster --name "${CLUSTER}" --wait 180s
  kubectl config use-context "kind-${CLUSTER}"
}

# README step 1: cert-manager, Envoy Gateway, KServe in Standard mode with the Gateway API.
install_kserve() {
  log "installing cert-manager, Envoy Gateway and KServe"
  kubectl apply -f https://github.com/cert-manager/cert-manager/releases/download/v1.17.0/cert-manager.yaml
  kubectl wait --for=condition=Available deployment --all -n cert-manager --timeout=300s
  helm install eg oci://docker.io/envoyproxy/gateway-helm --version v1.8.1 \
    --namespace envoy-gateway-system --create-namespace --wait
  helm install kserve-crd oci://ghcr.io/kserve/charts/kserve-crd --version v0.21.0 \
    --namespace kserve --create-namespace --wait
  helm install kserve oci://ghcr.io/kserve/charts/kserve-resources --version v0.21.0 \
    --namespace kserve --wait \
    --set kserve.controller.deploymentMode=Standard \
    --set kserve.controller.gateway.ingressGateway.enableGatewayApi=true
  kubectl apply -k manifests/ingress/
  kubectl wait --for=condition=Accepted gateway/kserve-ingress-gateway -n kserve --timeout=300s
}

# README step 2: the image; kind loads it where the README pushes it.
build_and_load_image() {
  log "building ${REGISTRY}/maas-predictor:0.1.0 and loading it into kind"
  docker build -t "$REGISTRY/maas-predictor:0.1.0" .
  kind load docker-image "$REGISTRY/maas-predictor:0.1.0" --name "${CLUSTER}"
}

# README step 3: the PVC and the models on it.
copy_models() {
  log "building the reference models (only what is missing) and copying them onto the PVC maas-models"
  python scripts/reference_models.py --out .models
  kubectl create namespace "$NAMESPACE"
  kubectl apply -n "$NAMESPACE" -k manifests/models/
  scripts/models_to_pvc.sh -n "$NAMESPACE" -c maas-models \
    .models/digits-cnn=image .models/digits-lstm=sequence .models/minilm=transformer \
    .models/digits-vae=generative .models/tiny-gpt=text-generation .models/tiny-chat=chat
}

# README step 4: the chart.
install_chart() {
  log "installing the chart with helm/examples/values-cpu.yaml"
  helm install maas-examples helm/maas --namespace "$NAMESPACE" -f helm/examples/values-cpu.yaml \
    --set image.repository="$REGISTRY/maas-predictor"
  kubectl wait --for=condition=Ready inferenceservice --all -n "$NAMESPACE" --timeout=900s
  helm test maas-examples --namespace "$NAMESPACE"
}

# README step 5: through the gateway with curl and call_model.py, then gRPC through a port-forward.
call_models() {
  local stream last
  log "calling digits through the gateway"
  # Not in the README: the proxy Deployment Envoy Gateway made for the Gateway is up.
  kubectl wait --for=condition=Available deployment -n envoy-gateway-system \
    -l gateway.envoyproxy.io/owning-gateway-name=kserve-ingress-gateway --timeout=300s
  GATEWAY_SERVICE=$(kubectl get service -n envoy-gateway-system \
    -l gateway.envoyproxy.io/owning-gateway-name=kserve-ingress-gateway -o jsonpath='{.items[0].metadata.name}')
  kubectl port-forward -n envoy-gateway-system "service/$GATEWAY_SERVICE" 8000:80 &
  PORT_FORWARDS+=("$!")
  wait_for_port 8000
  HOST=$(kubectl get inferenceservice digits -n "$NAMESPACE" -o jsonpath='{.status.url}' | cut -d/ -f3)
  curl -sS --fail-with-body -H "Host: $HOST" http://127.0.0.1:8000/v1/models/digits
  curl -sS --fail-with-body -H "Host: $HOST" http://127.0.0.1:8000/v2/models/digits/ready
  curl -sS --fail-with-body -H "Host: $HOST" http://127.0.0.1:8000/v2/models/digits
  curl -sS --fail-with-body -H "Host: $HOST" -H 'Content-Type: application/json' \
    -d @.models/digits-cnn/example-v2.json http://127.0.0.1:8000/v2/models/digits/infer
  echo
  python scripts/call_model.py --model digits --http http://127.0.0.1:8000 --host "$HOST"

  # The chat model's OpenAI-compatible API: a chat completion, the same streamed (its last event
  # must be `data: [DONE]`), and the openai client.
  log "calling tiny-chat's OpenAI API through the gateway (curl, streamed, openai client)"
  stream="$(mktemp)"
  HOST=$(kubectl get inferenceservice tiny-chat -n "$NAMESPACE" -o jsonpath='{.status.url}' | cut -d/ -f3)
  curl -sS --fail-with-body -H "Host: $HOST" -H 'Content-Type: application/json' \
    -d '{"model": "tiny-chat", "messages": [{"role": "user", "content": "what is three plus four?"}], "temperature": 0}' \
    http://127.0.0.1:8000/openai/v1/chat/completions
  echo
  {
    curl -sSN --fail-with-body -H "Host: $HOST" -H 'Content-Type: application/json' \
      -d '{"model": "tiny-chat", "messages": [{"role": "user", "content": "what is nine minus two?"}], "temperature": 0, "stream": true}' \
      http://127.0.0.1:8000/openai/v1/chat/completions
  } | tee "${stream}"
  last="$(grep -v '^[[:space:]]*$' "${stream}" | tail -n 1 | tr -d '\r')"
  rm -f "${stream}"
  [[ "${last}" == "data: [DONE]" ]] || die "the streamed answer did not end with 'data: [DONE]' (last line: ${last})"
  python - "$HOST" <<'EOF'
import sys

from openai import OpenAI

client = OpenAI(base_url="http://127.0.0.1:8000/openai/v1", api_key="unused", default_headers={"Host": sys.argv[1]})
messages = [{"role": "user", "content": "what is three plus four?"}]
answer = client.chat.completions.create(model="tiny-chat", messages=messages, temperature=0)
print(answer.choices[0].message.content)
for chunk in client.chat.completions.create(model="tiny-chat", messages=messages, temperature=0, stream=True):
    print("".join(c.delta.content or "" for c in chunk.choices), end="", flush=True)
print()
EOF

  log "calling digits over gRPC through a port-forward"
  kubectl port-forward -n "$NAMESPACE" service/digits-predictor 8080:80 8081:8081 &
  local grpc_forward="$!"
  PORT_FORWARDS+=("${grpc_forward}")
  wait_for_port 8080
  wait_for_port 8081
  python scripts/call_model.py --model digits --http http://127.0.0.1:8080 --grpc 127.0.0.1:8081
  stop_port_forward "${grpc_forward}"

  local model
  for model in "${CHART_MODELS[@]}"; do
    call_through_gateway "${model}"
    call_over_grpc "${model}"
  done
}

call_through_gateway() {
  local model="$1" host
  log "calling ${model} through the gateway (V1, V2)"
  host=$(kubectl get inferenceservice "${model}" -n "$NAMESPACE" -o jsonpath='{.status.url}' | cut -d/ -f3)
  python scripts/call_model.py --model "${model}" --http http://127.0.0.1:8000 --host "${host}"
}

call_over_grpc() {
  local model="$1" forward
  log "calling ${model} over V1, V2 and gRPC through a port-forward"
  kubectl port-forward -n "$NAMESPACE" "service/${model}-predictor" 8080:80 8081:8081 >/dev/null &
  forward="$!"
  PORT_FORWARDS+=("${forward}")
  wait_for_port 8080
  wait_for_port 8081
  python scripts/call_model.py --model "${model}" --http http://127.0.0.1:8080 --grpc 127.0.0.1:8081
  stop_port_forward "${forward}"
}

# README step 6: the plain manifests (the maas ClusterServingRuntime and four CPU models).
apply_manifests() {
  log "applying the plain manifests"
  kubectl apply -n "$NAMESPACE" -k manifests/
  kubectl wait --for=condition=Ready inferenceservice --all -n "$NAMESPACE" --timeout=900s
  local model
  for model in "${PLAIN_MODELS[@]}"; do
    call_through_gateway "${model}"
  done
  log "server-side dry run of manifests/gpu/ and manifests/namespaced/ (kind has no GPU)"
  kubectl apply --dry-run=server -n "$NAMESPACE" -k manifests/gpu/
  kubectl apply --dry-run=server -n "$NAMESPACE" -k manifests/namespaced/
}

# README step 7: remove what the steps installed.
remove() {
  log "removing the models, the release and the PVC"
  kubectl delete -n "$NAMESPACE" -k manifests/
  helm uninstall maas-examples --namespace "$NAMESPACE"
  kubectl delete -n "$NAMESPACE" -k manifests/models/
}

main() {
  preflight
  create_cluster
  install_kserve
  build_and_load_image
  copy_models
  install_chart
  call_models
  apply_manifests
  remove
  log "every README step ran; every model answered over V1, V2 and gRPC, the chat model over the OpenAI API"
}

main "$@"
