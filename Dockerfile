# syntax=docker/dockerfile:1
# Task State Manager: the API server and its task runners in one image.
#   docker build -t task-state-manager .
#   docker run -p 8000:8000 -v tsm-storage:/data -e TSM_DATABASE_URL=postgresql+asyncpg://… task-state-manager
# Migrations are applied when the server starts (and by `tsm-server migrate`).

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: resolve and install the package and its runtime dependencies into a venv ----------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# Every runtime dependency ships as a wheel for linux/amd64 and arm64: no compiler needed.
COPY pyproject.toml README.md ./
COPY app ./app
COPY clients ./clients
# With the s3 extra (aiobotocore): TSM_STORAGE_URL=s3://… works in the image as it is.
RUN pip install '.[s3]' && pip uninstall -y pip setuptools

# --- runtime: the venv only, run by an unprivileged user -------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="Task State Manager" \
      org.opencontainers.image.description="Pause, resume and cancel long-running uploads, downloads, imports and exports."
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TSM_HOST=0.0.0.0 \
    TSM_PORT=8000 \
    TSM_WORKERS=1 \
    TSM_AUTH_REQUIRED=true \
    TSM_STORAGE_DIR=/data \
    TSM_LOG_JSON=true
RUN groupadd --system --gid 10001 tsm \
    && useradd --system --uid 10001 --gid tsm --home-dir /srv/tsm --no-create-home --shell /usr/sbin/nologin tsm \
    && mkdir -p /data /srv/tsm \
    && chown tsm:tsm /data /srv/tsm
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/tsm
USER tsm
# Uploads, exports and reject files (and the SQLite file when no TSM_DATABASE_URL is set).
VOLUME ["/data"]
EXPOSE 8000
# slim has no curl: ask /healthz with the standard library.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TSM_PORT', '8000') + '/healthz', timeout=4)"]
# `tsm-server run`: uvicorn with proxy headers, TSM_WORKERS workers on TSM_PORT.
CMD ["python", "-m", "app", "run"]
