#!/usr/bin/env bash
# maas quick start. Sets up a virtualenv (.venv) with everything, then:
#   scripts/quickstart.sh serve   build the reference digits CNN into .models (once) and serve it
#                                 on 127.0.0.1:8080 (REST) and 8081 (gRPC)
#   scripts/quickstart.sh test    build every reference model into .models (once; again only when
#                                 their code changes), then ruff, mypy and the test suite
# Environment: TORCH_SPEC (default torch==2.13.0, the CPU build; e.g. "torch==2.5.1" for your CUDA),
# MAAS_VENV (default .venv), MAAS_TEST_MODELS (default .models), HTTP_PORT / GRPC_PORT
# (default 8080 / 8081), PYTEST_ARGS.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${MAAS_VENV:-.venv}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}
HTTP_PORT=${HTTP_PORT:-8080}
GRPC_PORT=${GRPC_PORT:-8081}

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV"
    python3 -m venv "$VENV"
  fi
  # shellcheck disable=SC1091
  . "$VENV/bin/activate"
  local stamp="$VENV/.maas-installed" want
  want="$(sha256sum pyproject.toml | cut -c1-16) $TORCH_SPEC"
  if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "==> installing $TORCH_SPEC and maas-serving[dev] (first run takes a minute or two)"
    python -m pip install -q --upgrade pip
    python -m pip install -q "$TORCH_SPEC"
    python -m pip install -q -e '.[dev]'
    echo "$want" > "$stamp"
  fi
}

serve() {
  setup
  echo "==> the reference digits CNN in .models/ (all of them: python scripts/reference_models.py --out .models)"
  python scripts/reference_models.py --out .models --only digits-cnn
  cat <<MSG
==> serving digits-cnn on http://127.0.0.1:${HTTP_PORT} (gRPC 127.0.0.1:${GRPC_PORT}); once it logs ready, try:
    curl -s -H 'content-type: application/json' -d @.models/digits-cnn/example-v2.json \\
         http://127.0.0.1:${HTTP_PORT}/v2/models/digits-cnn/infer
    curl -s -H 'content-type: application/json' -d @.models/digits-cnn/example-v1.json \\
         http://127.0.0.1:${HTTP_PORT}/v1/models/digits-cnn:predict
MSG
  exec python -m predictors --model_dir .models/digits-cnn --model_name digits-cnn --host 127.0.0.1 \
    --http_port "$HTTP_PORT" --grpc_port "$GRPC_PORT" "$@"
}

# tests/observability runs a real Prometheus: Debian's package brings prometheus and promtool
observability_tools() {
  if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "==> installing prometheus and promtool (tests/observability runs them)"
      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
    else
      echo "==> prometheus/promtool not found and not root: tests/observability will skip (apt-get install prometheus)" >&2
    fi
  fi
}

run_tests() {
  setup
  observability_tools
  echo "==> ruff and mypy"
  ruff check .
  mypy
  export MAAS_TEST_MODELS=${MAAS_TEST_MODELS:-.models}
  echo "==> the reference models in $MAAS_TEST_MODELS/ (built once; again only when their code changes)"
  python scripts/reference_models.py --out "$MAAS_TEST_MODELS"
  # shellcheck disable=SC2086
  python -m pytest ${PYTEST_ARGS:-} "$@"
}

case "${1:-}" in
  serve) shift; serve "$@" ;;
  test) shift; run_tests "$@" ;;
  *) echo "usage: $0 serve|test [extra args]" >&2; exit 64 ;;
esac
