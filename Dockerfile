# The worker in a container: `docker build -t patient-sidekiq .`, then
#   docker run --rm -e REDIS_URL=redis://redis:6379/0 --ulimit nofile=65536:65536 \
#     --stop-timeout 35 -p 9394:9394 patient-sidekiq
# Python callbacks: build your own image FROM this one, COPY your modules into /app and pass
# `run -r myapp.callbacks` (the working directory, /app, is where -r resolves).
# tests/test_deploy.py checks what this file promises (and builds it where Docker runs).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Only what `pip install` needs (.dockerignore keeps tests, .venv and .git out of the context).
COPY pyproject.toml README.md LICENSE /tmp/patient-sidekiq/
COPY src /tmp/patient-sidekiq/src
RUN pip install /tmp/patient-sidekiq && rm -rf /tmp/patient-sidekiq

RUN useradd --system --uid 10001 --create-home --home-dir /app --shell /usr/sbin/nologin app
WORKDIR /app
USER app

# One line of JSON per log record for the log collector; /metrics and /health on 9394.
ENV PATIENT_HTTP_LOG_FORMAT=json \
    PATIENT_HTTP_METRICS_PORT=9394
EXPOSE 9394
# /health answers 200 while the worker is healthy, 503 otherwise (urlopen raises on a 503).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ['PATIENT_HTTP_METRICS_PORT'], timeout=4)"]

# SIGTERM (docker stop) stops gracefully within shutdown_timeout (25 s by default): give
# `docker stop` / the orchestrator more than that (--stop-timeout 35, stop_grace_period: 35s).
STOPSIGNAL SIGTERM
ENTRYPOINT ["patient-sidekiq"]
CMD ["run"]
