# One file, two images (deploy/docker-compose.yml builds both):
#   docker build --target serve -t mmrec-serve .   the API: bundle/ + eventlog/ + service/, no torch
#   docker build --target train -t mmrec-train .   bootstrap, retrain, scheduler: + torch, training
# Nothing here needs BuildKit or a dockerfile frontend: the classic builder, BuildKit and podman
# (buildah) build it offline from a local base image and reachable package indexes.
#
# Package indexes (build arguments; unset = the defaults):
#   PIP_INDEX_URL, PIP_EXTRA_INDEX_URL, PIP_FIND_LINKS, PIP_TRUSTED_HOST: every pip install reads
#     them (a mirror or proxy of PyPI, a folder of wheels served over HTTP). They are recorded in
#     the image history: pass no credentials in them.
#   TORCH_INDEX_URL (default the PyTorch CPU index) / TORCH_CUDA_INDEX_URL (GPU=1): where torch
#     comes from. Empty: torch==TORCH_VERSION through the PIP_* indexes above, e.g.
#     --build-arg TORCH_INDEX_URL= --build-arg PIP_FIND_LINKS=http://host:8765/ (a wheel folder)
#   APT_MIRROR: replaces the Debian/Ubuntu archive in the base image's apt sources (tini, and
#     Python 3.11 on a base without it, such as the CUDA one, come from apt).
# GPU images: --build-arg BASE_IMAGE=nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04 --build-arg GPU=1
# (serve: requirements/serving-gpu.txt, the serving lock with faiss-gpu-cu12 and onnxruntime-gpu
# in place of faiss-cpu and onnxruntime; train: the CUDA build of torch). Both fall back to CPU.
# Dependencies are pinned in requirements/*.txt (scripts/lock_requirements.py writes them), the
# build backend (setuptools) included.
ARG BASE_IMAGE=python:3.11-slim-bookworm

FROM ${BASE_IMAGE} AS python
ARG APT_MIRROR=""
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# tini, the init (PID 1: forwards SIGTERM to the command, reaps children), from the distribution;
# a CUDA base image has no Python 3.11 either: take the distribution's.
RUN if [ -n "$APT_MIRROR" ]; then \
        find /etc/apt \( -name sources.list -o -path '*/sources.list.d/*' \) -type f -exec \
            sed -i -E "s#https?://(archive|security)\.ubuntu\.com/ubuntu/?#${APT_MIRROR%/}#; s#https?://deb\.debian\.org/debian/?#${APT_MIRROR%/}#" {} +; \
    fi \
    && apt-get update \
    && if command -v python3.11 >/dev/null; then \
        apt-get install -y --no-install-recommends tini=0.19.*; \
    else \
        apt-get install -y --no-install-recommends tini=0.19.* python3.11=3.11.* python3.11-venv=3.11.*; \
    fi \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
    && python3.11 -m venv /opt/venv \
    && mkdir -p /bundles /state \
    && chown 10001:10001 /bundles /state
WORKDIR /app
# tini is PID 1: it forwards SIGTERM/SIGINT to Python (its one child: the scheduler stops its own
# retrain) and exits with Python's status; the training commands' own handlers make that 0 for
# the scheduler and non-zero for a run stopped before it finished (a Job is then not done).
# mmrec-entrypoint (deploy/docker-entrypoint.sh, copied last in each stage) checks that the
# bundle and the datasets are readable by the image's user, then execs the command.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/mmrec-entrypoint"]

FROM python AS serve
ARG GPU=0
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
# Pinned dependencies first (a layer that survives code changes), then the code without deps.
# A lock is the whole set (--no-deps: nothing unpinned comes in; pip check proves it complete).
# The GPU image installs its own lock instead of the CPU one (one faiss, one onnxruntime).
COPY requirements/serving.txt requirements/serving-gpu.txt requirements/
RUN lock=requirements/serving.txt; \
    if [ "$GPU" = 1 ]; then lock=requirements/serving-gpu.txt; fi; \
    pip install --no-cache-dir --no-deps --requirement "$lock"
COPY pyproject.toml README.md ./
COPY bundle/ bundle/
COPY eventlog/ eventlog/
COPY service/ service/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check
COPY deploy/docker-entrypoint.sh /usr/local/bin/mmrec-entrypoint
USER 10001:10001
ENV RECSYS_HOST=0.0.0.0 \
    RECSYS_PORT=8000 \
    RECSYS_BUNDLE=/bundles/current \
    RECSYS_DATABASE_URL=sqlite:////state/recsys.db
EXPOSE 8000
# uvicorn stops gracefully on SIGTERM and then re-raises it, so the process ends "killed by
# SIGTERM" (143; Python as PID 1 used to hide that): -e 143 makes a requested stop exit 0.
ENTRYPOINT ["/usr/bin/tini", "-e", "143", "--", "/usr/local/bin/mmrec-entrypoint"]
# Ready, not only alive: 503 until a bundle is served (or while current names one that failed).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen(f\"http://127.0.0.1:{os.environ.get('RECSYS_PORT', '8000')}/readyz\", timeout=2)"]
CMD ["python", "-m", "service"]

FROM python AS train
ARG GPU=0
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# The CUDA index of torch 2.13.0: a CUDA 12 build (the base image's CUDA 12.4 driver API, the
# same major as faiss-gpu-cu12). Unchecked here (download.pytorch.org is unreachable from the
# machine these files were written on): check that the index lists the release first with
#   pip download --no-deps --index-url https://download.pytorch.org/whl/cu126 torch==2.13.0
# and pass another --build-arg TORCH_CUDA_INDEX_URL (cu128, cu130...) if it does not.
ARG TORCH_CUDA_INDEX_URL=https://download.pytorch.org/whl/cu126
ARG PIP_INDEX_URL
ARG PIP_EXTRA_INDEX_URL
ARG PIP_FIND_LINKS
ARG PIP_TRUSTED_HOST
COPY requirements/train.txt requirements/
RUN pip install --no-cache-dir --no-deps --requirement requirements/train.txt
# torch after the lock (which leaves it out): its CPU build's dependencies are all in the lock,
# so only torch comes from its index (the CUDA build adds its nvidia-* libraries from the CUDA
# index). A torch index replaces the PIP_* ones for this step (PyPI's torch is a CUDA build).
RUN index="$TORCH_INDEX_URL"; \
    if [ "$GPU" = 1 ]; then index="$TORCH_CUDA_INDEX_URL"; fi; \
    if [ -n "$index" ]; then \
        export PIP_INDEX_URL="$index"; \
        unset PIP_EXTRA_INDEX_URL PIP_FIND_LINKS; \
    fi; \
    pip install --no-cache-dir "torch==${TORCH_VERSION}"
COPY pyproject.toml README.md ./
COPY bundle/ bundle/
COPY eventlog/ eventlog/
COPY models/ models/
COPY training/ training/
COPY configs/ configs/
RUN pip install --no-cache-dir --no-deps --no-build-isolation . \
    && pip check
COPY deploy/docker-entrypoint.sh /usr/local/bin/mmrec-entrypoint
USER 10001:10001
ENV RECSYS_BUNDLES_ROOT=/bundles \
    RECSYS_DATA_DIR=/data \
    RECSYS_CACHE_DIR=/state/cache \
    RECSYS_DATABASE_URL=sqlite:////state/recsys.db \
    MPLCONFIGDIR=/tmp/matplotlib
CMD ["python", "-m", "training", "schedule"]
