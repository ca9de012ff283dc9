# One image for every process of the Procfile: web (gunicorn, the default command), worker
# and beat (Celery), and the release step (migrate). docker-compose.yml runs them all.
FROM python:3.11-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DJANGO_SETTINGS_MODULE=imagerec.settings.production \
    PORT=8000 \
    MEDIA_ROOT=/data/media \
    STATIC_ROOT=/app/staticfiles \
    CELERY_BEAT_SCHEDULE_FILENAME=/data/beat/celerybeat-schedule \
    TORCH_HOME=/opt/torch

# curl, for the health check.
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY requirements.txt .
# torch and torchvision (the versions requirements.txt pins) from PyTorch's CPU-only index:
# PyPI's builds bring gigabytes of CUDA libraries a CPU worker never uses. The rest from
# PyPI, where those two pins are then already satisfied.
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        "$(grep -E '^torch==' requirements.txt)" "$(grep -E '^torchvision==' requirements.txt)" \
 && pip install -r requirements.txt

# The ImageNet weights (45 MB) in the image: workers start without a download.
RUN python -c "from torchvision.models import ResNet18_Weights; ResNet18_Weights.IMAGENET1K_V1.get_state_dict(progress=False)"

COPY . .
# Hashed, compressed static files for WhiteNoise. Production settings insist on their
# variables even here; collectstatic uses none of these placeholders.
RUN SECRET_KEY=collectstatic-at-build-time-uses-no-secret-0123456789 DEBUG=false \
    ALLOWED_HOSTS=build.invalid DATABASE_URL=postgres://build.invalid/imagerec \
    CELERY_BROKER_URL=redis://build.invalid:6379/0 METRICS_PUBLIC=true \
    python manage.py collectstatic --noinput

# Never root: uploads and the beat schedule are the only things it writes.
RUN useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin imagerec \
 && mkdir -p /data/media /data/beat \
 && chown -R imagerec:imagerec /data
USER imagerec
EXPOSE 8000

# The web process: /healthz as the proxy would ask (its host name, HTTPS already ended),
# so the security middleware neither refuses the host nor redirects to https. Worker and
# beat containers override it (docker-compose.yml).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD curl --fail --silent --show-error --max-time 4 --output /dev/null \
        --header "Host: ${ALLOWED_HOSTS%%,*}" --header "X-Forwarded-Proto: https" \
        "http://127.0.0.1:${PORT}/healthz" || exit 1

CMD ["gunicorn", "--config", "python:imagerec.gunicorn", "imagerec.wsgi"]
