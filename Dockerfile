# syntax=docker/dockerfile:1
# cache-pipeline worker image.
#
#   docker build -t cache-pipeline .
#   docker run --rm -e QUEUE_URL=... -e REDIS_HOST=... -p 4000:4000 cache-pipeline
#
# The builder stage has the compilers (for any dependency without a wheel) and
# builds a virtualenv from uv.lock (hash-checked: the versions the tests ran); the
# final stage copies only that virtualenv onto a slim Python, runs as an
# unprivileged numeric user and writes nothing outside /tmp, so it runs with a
# read-only root filesystem.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON=python3 \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_NO_CACHE=1 \
    UV_SYSTEM_CERTS=1
# Debian's build tools are not pinned: their versions follow the base image.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# uv, hash-checked, in a venv of its own; then the locked dependencies (a layer that only
# changes with uv.lock), then the project itself, never editable.
COPY requirements-uv.txt ./
RUN python -m venv /opt/uv \
    && /opt/uv/bin/pip install --require-hashes -r requirements-uv.txt
COPY pyproject.toml uv.lock README.md ./
RUN /opt/uv/bin/uv sync --locked --no-dev --extra worker --no-install-project
COPY cache_pipeline ./cache_pipeline
RUN /opt/uv/bin/uv sync --locked --no-dev --extra worker --no-editable

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="cache-pipeline" \
      org.opencontainers.image.description="SQS to Redis entitlements cache worker" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    PORT=4000
RUN groupadd --system --gid 10001 cache-pipeline \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /nonexistent --shell /usr/sbin/nologin cache-pipeline
COPY --from=builder /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
EXPOSE 4000
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '4000'), timeout=2)"]
ENTRYPOINT ["cache-pipeline"]
CMD ["worker"]
