# syntax=docker/dockerfile:1
# An exact release, not a moving tag: a rebuild months later gets the same Python (3.11.15, the
# latest 3.11 in docker-library/python's versions.json when pinned). Raise it on purpose.
FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_PATH=/app/data/imagine.db

WORKDIR /app
RUN useradd --create-home --uid 10001 imagine && mkdir -p /app/data && chown imagine:imagine /app/data

# The dependencies, from the lock alone (exact versions, every file's hash checked): this layer
# is rebuilt only when requirements.lock changes, never for a change to the code.
COPY requirements.lock ./
RUN pip install --require-hashes --no-deps -r requirements.lock

# Then the code, installed without touching the dependencies above; `pip check` fails the build
# if the lock is missing something the project needs.
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install --no-deps . && pip check

USER 10001
VOLUME ["/app/data"]
# kie.ai callbacks (when PUBLIC_BASE_URL is set) and the health check.
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot.healthcheck"]
# Docker stop sends SIGTERM; the bot stops taking new work and closes the database cleanly.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
