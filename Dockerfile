# mixpeek-operator image: the same `mixpeek-operator` CLI the chart and the tests run.
#   docker build -t mixpeek-operator:dev .
#   docker run --rm mixpeek-operator:dev --help
# No `# syntax=` line: BuildKit's built-in frontend handles RUN --mount, and a syntax line
# would make it fetch a frontend image (machines without registry access cannot).
# `make image` builds this file with buildah from a Debian base and host-built wheels
# (PYTHON_IMAGE and PIP_WHEEL_ARGS, see hack/image.py).
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- builder: wheels for the project and every runtime dependency ---------------------------
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Extra `pip wheel` options, e.g. "--no-index --find-links=/wheelhouse" for an offline build.
ARG PIP_WHEEL_ARGS=""
# Metadata first, so dependency wheels are rebuilt only when the project changes.
COPY pyproject.toml README.md ./
COPY operator/ operator/
# The `emulator` extra too: the same image serves `mixpeek-operator emulator` (docs/quickstart).
RUN pip wheel --wheel-dir /wheels ${PIP_WHEEL_ARGS} ".[emulator]"

# --- runtime: the wheels installed into the slim base, nothing else -------------------------
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="mixpeek-operator" \
      org.opencontainers.image.description="Kubernetes operator for Mixpeek bucket syncs (BucketSync)" \
      org.opencontainers.image.licenses="Apache-2.0"
# No .pyc writes: the root filesystem is read-only in the chart; /tmp is the only writable path.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp
# The wheels are bind-mounted from the builder, so they never land in a layer of this image.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir --no-index --find-links=/wheels /wheels/*.whl \
    && mixpeek-operator --help > /dev/null
# Numeric non-root user (the "nonroot" id of distroless images): runAsNonRoot can verify it
# without an /etc/passwd entry.
USER 65532:65532
# 8080: Prometheus metrics, 8081: liveness (/healthz), 8099: the emulator's default port.
EXPOSE 8080 8081 8099
# Exec form: no shell runs at runtime; signals reach the operator directly.
ENTRYPOINT ["mixpeek-operator"]
CMD ["run"]
