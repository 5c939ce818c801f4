# syntax=docker/dockerfile:1
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DATABASE_PATH=/app/data/imagine.db

WORKDIR /app
RUN useradd --create-home --uid 10001 imagine

COPY pyproject.toml README.md ./
COPY bot ./bot
COPY cogs ./cogs
RUN pip install . && mkdir -p /app/data && chown imagine:imagine /app/data

USER 10001
VOLUME ["/app/data"]
# kie.ai callbacks (when PUBLIC_BASE_URL is set) and the health check.
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "bot.healthcheck"]
# Docker stop sends SIGTERM; the bot stops taking new work and closes the database cleanly.
STOPSIGNAL SIGTERM
CMD ["python", "-m", "bot"]
