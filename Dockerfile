# syntax=docker/dockerfile:1
# The maas predictor image: `python -m predictors` serving one model from /mnt/models over
# V1/V2 REST (8080) and V2 gRPC (8081); the version controller runs from it too
# (`python /app/scripts/controller.py run ...`).
#
# CPU build (the default):
#   docker build -t ghcr.io/maas-project/maas-predictor:0.1.0 .
# CUDA build (pick the PyTorch wheel index that matches your driver):
#   docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#     -t ghcr.io/maas-project/maas-predictor:0.1.0-cuda .

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# torch is installed first, from its own index, so pip does not pull the default (CUDA) build.
ARG TORCH_SPEC="torch==2.13.0"
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
RUN python -m venv /opt/venv \
 && pip install --index-url "${TORCH_INDEX_URL}" "${TORCH_SPEC}"
WORKDIR /app
COPY pyproject.toml README.md ./
COPY predictors/ predictors/
RUN pip install "/app[storage,controller,transformers]"

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
