# syntax=docker/dockerfile:1
# One image for every Tocsin service: `docker run tocsin:dev gateway` (or ingest,
# processor, notifier, scheduler). Targets: `runtime` (default, last) and `dev` (Tilt).
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# --- builder: resolve and install every distribution into a venv, pinned by constraints.txt.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_CONSTRAINT=/src/constraints.txt
WORKDIR /src
RUN python -m venv /opt/tocsin
# Pins first, so a source change does not invalidate the cached dependency layer's inputs.
COPY constraints.txt ./
COPY libs/ libs/
COPY services/ services/
# Same pins as `make setup` (PIP_CONSTRAINT=constraints.txt), without the dev tools
# and without -e: the runtime image carries wheels, not a source tree.
RUN /opt/tocsin/bin/pip install --no-cache-dir \
        ./libs/common ./libs/client \
        ./services/gateway ./services/ingest ./services/processor \
        ./services/notifier ./services/scheduler

# --- base: the runtime without build inputs; a fixed non-root uid the chart relies on.
FROM ${PYTHON_IMAGE} AS base
RUN groupadd --system --gid 10001 tocsin \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin tocsin
COPY --from=builder /opt/tocsin /opt/tocsin
# Bytecode was compiled at install time, so the read-only root filesystem is never written:
# the only writable path in a pod is the /tmp volume the chart mounts.
ENV PATH=/opt/tocsin/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    TOCSIN_HOST=0.0.0.0 \
    TOCSIN_LOG_FORMAT=json
WORKDIR /tmp
EXPOSE 8080 8081 8082 8083 8084
STOPSIGNAL SIGTERM
# Exec form: the Python process is PID 1 and gets SIGTERM itself (drain, graceful stop).
ENTRYPOINT ["tocsin"]
CMD ["--help"]

# --- dev: the runtime plus editable sources under /app, for Tilt's live_update.
FROM base AS dev
WORKDIR /app
COPY --chown=10001:10001 constraints.txt ./
COPY --chown=10001:10001 libs/ libs/
COPY --chown=10001:10001 services/ services/
RUN PIP_CONSTRAINT=/app/constraints.txt /opt/tocsin/bin/pip install --no-cache-dir --no-deps \
        -e ./libs/common -e ./libs/client \
        -e ./services/gateway -e ./services/ingest -e ./services/processor \
        -e ./services/notifier -e ./services/scheduler
USER 10001:10001

# --- runtime: the default target (last stage).
FROM base AS runtime
USER 10001:10001
