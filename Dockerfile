# syntax=docker/dockerfile:1
# One file, two images (deploy/docker-compose.yml builds both):
#   docker build --target serve -t mmrec-serve .   the API: bundle/ + eventlog/ + service/, no torch
#   docker build --target train -t mmrec-train .   bootstrap, retrain, scheduler: + torch, training
# GPU images: --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 --build-arg GPU=1
# (serve: faiss-gpu and onnxruntime-gpu; train: the CUDA build of torch). Both fall back to CPU.
# Dependencies are pinned in requirements/*.txt (scripts/lock_requirements.py writes them).
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS python
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A CUDA base image has no Python 3.11: take the distribution's.
RUN if ! command -v python3.11 >/dev/null; then \
        apt-get update \
        && apt-get install -y --no-install-recommends python3.11=3.11.* python3.11-venv=3.11.* \
        && rm -rf /var/lib/apt/lists/*; \
    fi \
    && python3.11 -m venv /opt/venv \
    && mkdir -p /bundles /state \
    && chown 10001:10001 /bundles /state
WORKDIR /app

FROM python AS serve
ARG GPU=0
# Pinned dependencies first (a layer that survives code changes), then the code without deps.
COPY requirements/serving.txt requirements/
RUN pip install --no-cache-dir --requirement requirements/serving.txt \
    && if [ "$GPU" = 1 ]; then \
        pip install --no-cache-dir faiss-gpu-cu12==1.* onnxruntime-gpu==1.*; \
    fi
COPY pyproject.toml README.md ./
COPY bundle/ bundle/
COPY eventlog/ eventlog/
COPY service/ service/
RUN pip install --no-cache-dir --no-deps .
USER 10001:10001
ENV RECSYS_HOST=0.0.0.0 \
    RECSYS_PORT=8000 \
    RECSYS_BUNDLE=/bundles/current \
    RECSYS_DATABASE_URL=sqlite:////state/recsys.db
EXPOSE 8000
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('RECSYS_PORT', '8000')}/healthz\", timeout=2)"]
CMD ["python", "-m", "service"]

FROM python AS train
ARG GPU=0
ARG TORCH_VERSION=2.13.0
# The CPU wheel unless GPU=1: PyPI's default torch is a CUDA build of several GB.
RUN index=https://download.pytorch.org/whl/cpu; \
    if [ "$GPU" = 1 ]; then index=https://download.pytorch.org/whl/cu124; fi; \
    pip install --no-cache-dir --index-url "$index" "torch==${TORCH_VERSION}"
COPY requirements/train.txt requirements/
RUN pip install --no-cache-dir --requirement requirements/train.txt
COPY pyproject.toml README.md ./
COPY bundle/ bundle/
COPY eventlog/ eventlog/
COPY models/ models/
COPY training/ training/
COPY configs/ configs/
RUN pip install --no-cache-dir --no-deps .
USER 10001:10001
ENV RECSYS_BUNDLES_ROOT=/bundles \
    RECSYS_DATA_DIR=/data \
    RECSYS_CACHE_DIR=/state/cache \
    RECSYS_DATABASE_URL=sqlite:////state/recsys.db
CMD ["python", "-m", "training", "schedule"]
