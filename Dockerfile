# syntax=docker/dockerfile:1
# voxpipe: one image for every stage (asr, nlp, recommender, tts, orchestrator); the compose file picks
# the stage with `voxpipe serve <stage>`. Two stages (see docs/DOCKER.md, "Why models are built into the
# image"): `builder` installs the build extras (torch CPU, onnx) and runs `voxpipe build` into /models
# (ONNX graphs for the CPU, PyTorch weights for the GPU); `runtime` installs voxpipe without them and copies
# /models: the CPU image has no torch at all; the GPU image adds the `gpu` extra (PyTorch with CUDA).
#
#   docker build -t voxpipe:local .                                   # CPU (ONNX Runtime)
#   docker build -t voxpipe:gpu --build-arg VOXPIPE_EXTRAS=otlp,gpu .  # GPU (PyTorch CUDA)
#
# Where no registry is reachable (docs/DOCKER.md, deploy/containers.sh): BASE_IMAGE names a local Debian
# bookworm image with python3 (>= 3.11), and MODELS_FROM=host-models takes the model repository built on the
# host (copied to deploy/models/) instead of building it here with torch.

# Any Debian bookworm image with Python 3.11 and python-is-python3 works as the base.
ARG BASE_IMAGE=python:3.11.14-slim-bookworm
# Where /models comes from: `builder` (built in the image) or `host-models` (deploy/models/ in the context).
ARG MODELS_FROM=builder

FROM ${BASE_IMAGE} AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
# espeak-ng: test speech and the TTS phonemizer's system fallback; libsndfile1: soundfile (WAV I/O).
RUN apt-get update \
    && apt-get install -y --no-install-recommends espeak-ng libsndfile1 \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------
FROM base AS wheel
# voxpipe's own wheel, no dependencies: what the runtime stage installs. Only the package sources: not the
# whole context, which may hold a host model repository (deploy/models/).
WORKDIR /src
COPY pyproject.toml README.md /src/
COPY protos /src/protos
COPY services /src/services
COPY engines /src/engines
COPY orchestrator /src/orchestrator
COPY clients /src/clients
RUN python -m venv /opt/wheel-venv \
    && /opt/wheel-venv/bin/pip wheel --no-deps --wheel-dir /wheels /src

# ---------------------------------------------------------------------------------------------------
FROM base AS builder
# The CPU build of torch (build-time only): a plain `torch` from PyPI pulls a multi-GB CUDA build.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PATH=/opt/build-venv/bin:$PATH
RUN python -m venv /opt/build-venv \
    && pip install --index-url "${TORCH_INDEX_URL}" torch==2.13.0
WORKDIR /src
COPY . /src
# faster-whisper is the ASR build's golden reference (see engines/build/asr_golden.py); the same pin as
# pyproject.toml, which tests/unit/test_dockerfile.py checks.
RUN pip install "/src[build]" faster-whisper==1.2.1
# Run from the source tree (cwd first on sys.path) so builds find their golden fixtures under tests/.
ENV VOXPIPE_MODELS_DIR=/models VOXPIPE_CACHE_DIR=/tmp/voxpipe-cache
RUN python -m clients.cli build \
    && rm -rf /tmp/voxpipe-cache

# ---------------------------------------------------------------------------------------------------
# A model repository built on the host (`voxpipe build`, then copied to deploy/models/).
FROM scratch AS host-models
COPY deploy/models/ /models/

FROM ${MODELS_FROM} AS models

# ---------------------------------------------------------------------------------------------------
FROM base AS runtime
# voxpipe's extras in the image: `otlp` (every stage exports its spans to Jaeger when
# OTEL_EXPORTER_OTLP_ENDPOINT is set); add `gpu` for the PyTorch CUDA backend (the driver comes from the
# host through the NVIDIA runtime; CUDA and cuDNN from PyTorch's wheels).
ARG VOXPIPE_EXTRAS=otlp
# One fixed UID (10001) for every voxpipe container and the MPS daemon: MPS only serves clients of its
# own UID, and docker-compose.yml runs every service as 10001:10001.
RUN groupadd --system --gid 10001 voxpipe \
    && useradd --system --uid 10001 --gid voxpipe --create-home --home-dir /home/voxpipe \
       --shell /usr/sbin/nologin voxpipe
ENV PATH=/opt/venv/bin:$PATH
COPY --from=wheel /wheels /wheels
# DL3013: the wheel file fixes voxpipe's version and voxpipe pins or bounds its own dependencies.
# hadolint ignore=DL3013
RUN python -m venv /opt/venv \
    && wheel="$(ls /wheels/voxpipe-*.whl)" \
    && pip install "${wheel}[${VOXPIPE_EXTRAS}]" \
    && rm -rf /wheels
COPY --from=models /models /models
COPY services/common/voxpipe.toml /etc/voxpipe/voxpipe.toml
COPY deploy/healthcheck.py /opt/voxpipe/healthcheck.py
# MPS pipe and log directories, owned by the voxpipe UID; compose mounts shared volumes here and a
# fresh named volume takes this ownership.
RUN mkdir -p /run/voxpipe/mps-pipe /run/voxpipe/mps-log \
    && chown -R voxpipe:voxpipe /run/voxpipe
ENV VOXPIPE_CONFIG=/etc/voxpipe/voxpipe.toml \
    VOXPIPE_MODELS_DIR=/models \
    VOXPIPE_HOST=0.0.0.0 \
    VOXPIPE_DEVICE=cpu \
    VOXPIPE_CACHE_DIR=/home/voxpipe/.cache/voxpipe
USER 10001:10001
WORKDIR /home/voxpipe
# gRPC ports 50050-50054 and Prometheus ports 9100-9104 of the default config.
EXPOSE 50050-50054 9100-9104
# Without a stage argument the probe finds whichever stage this container runs (compose names it).
HEALTHCHECK --interval=10s --timeout=5s --start-period=180s --retries=3 \
    CMD ["python", "/opt/voxpipe/healthcheck.py"]
CMD ["voxpipe", "--help"]
