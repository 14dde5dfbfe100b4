# The platform's image: daphne (web), Celery worker and beat all run from it; nginx runs in front of
# daphne from the official image (docker-compose.yml, deploy/nginx).
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 \
    VAR_DIR=/var/lib/cs-platform STATIC_ROOT=/app/staticfiles MEDIA_ROOT=/var/lib/cs-platform/media

# Tesseract with Chinese data: OCR when the model is text-only (INFERENCE_VISION=false).
RUN apt-get update \
    && apt-get install -y --no-install-recommends tesseract-ocr tesseract-ocr-chi-sim tesseract-ocr-eng \
    && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY pyproject.toml README.md ./
# Every Django app of INSTALLED_APPS (tests/test_image.py checks that none is missing).
COPY cs_platform cs_platform
COPY conversations conversations
COPY inference inference
COPY knowledge knowledge
COPY agents agents
COPY review review
COPY reports reports
COPY access access
COPY safety safety
COPY gateway gateway
COPY tools tools
RUN pip install .
COPY manage.py ./
COPY templates templates
COPY static static
# collectstatic only needs settings to import; the real secret comes from the environment at run time.
RUN SECRET_KEY=build-only REDIS_URL=redis://unused:6379/0 python manage.py collectstatic --noinput \
    && useradd --system --home /app cs && mkdir -p /var/lib/cs-platform/media && chown -R cs /var/lib/cs-platform

USER cs
EXPOSE 8000
# The one production web entry point (compose's web service and tests/test_front_proxy.py run it too):
# daphne on DAPHNE_BIND:DAPHNE_PORT (0.0.0.0:8000), behind deploy/nginx, without --proxy-headers.
CMD ["python", "-m", "cs_platform.serve_web"]
