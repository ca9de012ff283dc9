"""The Celery application; configuration lives in Django settings under CELERY_*."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings.local")

app = Celery("imagerec")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
