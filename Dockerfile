# Wiregate: mount a config at /etc/wiregate/wiregate.toml and publish 6432 (PostgreSQL) and/or
# 3307 (MySQL/MariaDB).
# Inside a container the listener must bind all interfaces: listen = "0.0.0.0:6432".

# Build stage: a C compiler for the row walks of masked results and the walk over MySQL answers
# (protocols/postgres/_rows.c, protocols/mysql/_rows.c and _answers.c).
FROM python:3.11-slim AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml README.md ./
COPY protocols ./protocols
COPY policies ./policies
COPY proxy ./proxy
# Wheels of the project and its dependencies (DL3013's version pinning applies to index packages).
# hadolint ignore=DL3013
RUN pip wheel --no-cache-dir --wheel-dir /wheels '.[fast]'

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    WIREGATE_HEALTH_PORT=6432

COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels 'wiregate[fast]' \
    && rm -rf /wheels \
    && groupadd --system --gid 10001 wiregate \
    && useradd --system --uid 10001 --gid wiregate --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin wiregate \
    && mkdir -p /etc/wiregate

VOLUME ["/etc/wiregate"]
EXPOSE 6432 3307
# The wiregate user, by number so Kubernetes' runAsNonRoot can verify it is not root.
USER 10001:10001

# Healthy means the listener accepts TCP; set WIREGATE_HEALTH_PORT if the config listens elsewhere.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
    CMD ["python", "-c", "import os, socket; socket.create_connection(('127.0.0.1', int(os.environ.get('WIREGATE_HEALTH_PORT', '6432'))), timeout=3).close()"]

ENTRYPOINT ["wiregate"]
CMD ["serve", "--config", "/etc/wiregate/wiregate.toml"]
