# syntax=docker/dockerfile:1
# The maas predictor image: `python -m predictors` serving one model from /mnt/models over
# V1/V2 REST (8080) and V2 gRPC (8081); the version controller runs from it too
# (`python /app/scripts/controller.py run ...`). It holds what serving and the controller import
# and nothing else: no reference weights, no training, test or sentence-transformers libraries.
#
# CPU build (the default):
#   docker build -t ghcr.io/maas-project/maas-predictor:0.1.0 .
# CUDA build (pick the PyTorch wheel index that matches your driver):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#     -t ghcr.io/maas-project/maas-predictor:0.1.0-cuda .
# Without a registry or without the PyTorch index, scripts/image.sh builds with podman or docker,
# from a Debian base it makes with mmdebstrap, a local wheel folder and a CA bundle
# (scripts/image.sh help).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# torch is installed first, from its own index, so pip does not pull the default (CUDA) build.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Set by scripts/image.sh only: a wheel folder (PIP_FIND_LINKS) and a CA bundle (PIP_CERT), paths
# its `podman build -v` mounts for the RUN steps; empty: not used. Environment, not pip options, so
# the isolated build of /app below sees them too.
ARG WHEELHOUSE=""
ARG BUILD_CA_BUNDLE=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN [ -z "$WHEELHOUSE" ] || export PIP_FIND_LINKS="$WHEELHOUSE"; \
    [ -z "$BUILD_CA_BUNDLE" ] || export PIP_CERT="$BUILD_CA_BUNDLE"; \
    python -m venv /opt/venv \
 && pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY predictors/ predictors/
# The `transformers` extra is what the transformer family imports (the `reference` extra, which
# builds the reference models, stays out). TORCH_SPEC again, so the resolver keeps torch as is.
RUN [ -z "$WHEELHOUSE" ] || export PIP_FIND_LINKS="$WHEELHOUSE"; \
    [ -z "$BUILD_CA_BUNDLE" ] || export PIP_CERT="$BUILD_CA_BUNDLE"; \
    pip install "/app[storage,controller,transformers]" "${TORCH_SPEC}"
# What serving never loads: torch's C++ test binaries and headers (only for compiling extensions),
# pandas' test suite, and the kubernetes client's asyncio copy (the controller uses the sync client).
RUN site="$(python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')" \
 && rm -rf "$site/torch/test" "$site/torch/include" "$site/pandas/tests" "$site/kubernetes/aio" \
 && { [ ! -d "$site/torch/bin" ] || find "$site/torch/bin" -type f ! -name torch_shm_manager -delete; } \
 && python -c "import torch, onnxruntime, onnx, transformers, tokenizers, kserve, kserve_storage, kubernetes, predictors.cli"

FROM ${PYTHON_IMAGE}
# A numeric, non-root user: Kubernetes' runAsNonRoot can only verify a numeric UID.
RUN groupadd --gid 1000 maas \
 && useradd --uid 1000 --gid 1000 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin maas
COPY --from=build /opt/venv /opt/venv
WORKDIR /app
# predictors is installed in /opt/venv; scripts/ holds the version controller.
COPY scripts/ scripts/
# The root filesystem is read-only in the cluster: everything writable lives on /tmp (an emptyDir).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp \
    TMPDIR=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    HF_HOME=/tmp/huggingface \
    TORCH_HOME=/tmp/torch
USER 1000:1000
EXPOSE 8080 8081
ENTRYPOINT ["python", "-m", "predictors"]
