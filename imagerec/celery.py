"""The Celery application; configuration lives in Django settings under CELERY_*.

The entry point of `celery -A imagerec ...`, as wsgi.py is gunicorn's and manage.py is
Django's: like them it names the default settings module. It is not imported by
``imagerec/__init__.py``, so importing anything else in the project changes no environment;
code that sends tasks imports ``app`` from here.
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "imagerec.settings.local")

app = Celery("imagerec")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
