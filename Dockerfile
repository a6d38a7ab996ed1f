# instructflow in a container: the same install as `make` (torch first, pinned;
# then the project at the exact versions of constraints.txt).
#
# CPU (default):
#   docker build -t instructflow:cpu .
# CUDA: torch's CUDA wheel brings the CUDA runtime; the host needs only the
# NVIDIA driver and container toolkit (docker run --gpus all ...). A CUDA base
# image is optional; any image with Python 3.11 and pip will do:
#   docker build -t instructflow:cuda \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
#   docker build -t instructflow:cuda \
#     --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 \
#     --build-arg PYTHON=python3.11 \
#     --build-arg TORCH_INDEX=https://download.pytorch.org/whl/cu128 .
ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG PYTHON=python3
ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu

# git: runs record their commit and DVC tracks data in it; the rest comes as wheels.
# Unpinned apt packages: the base image's Debian release fixes their versions.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends git ca-certificates \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
ENV VIRTUAL_ENV=/app/.venv \
    PATH=/app/.venv/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PYTHONUNBUFFERED=1

# Dependencies first (a layer that survives code changes), as `make` installs them:
# pip itself upgraded (unpinned, as in the Makefile), torch pinned, then constraints.txt.
COPY pyproject.toml constraints.txt README.md ./
# hadolint ignore=DL3013
RUN ${PYTHON} -m venv "$VIRTUAL_ENV" \
    && pip install --quiet --upgrade pip \
    && pip install --quiet --index-url "$TORCH_INDEX" torch==2.13.0

COPY . .
RUN pip install --quiet -c constraints.txt -e ".[dev]" \
    && instructflow --help > /dev/null

# The project root (data.dvc, data/, runs/, mlflow/) is /app unless INSTRUCTFLOW_ROOT
# says otherwise; point MLFLOW_TRACKING_URI at a shared server for runs on work pools.
# No ENTRYPOINT: a Prefect worker runs its own command (prefect flow-run execute) here.
CMD ["instructflow", "run", "--profile", "smoke"]
