"""The web process stays light: nothing it imports pulls in torch."""

import subprocess
import sys

from django.conf import settings

from tests.conftest import PROJECT_DIR

WEB_IMPORTS = """
import sys
import django
django.setup()
from django.urls import resolve
import imagerec.urls, gallery.views, gallery.admin, gallery.services, gallery.tasks, similarity.selectors
from django.contrib import admin
admin.autodiscover()
for path in ["/", "/images/1/", "/recommend", "/admin/gallery/image/add/"]:
    resolve(path)
print("torch" in sys.modules, "torchvision" in sys.modules)
"""


def test_web_code_never_imports_torch():
    result = subprocess.run(
        [sys.executable, "-c", WEB_IMPORTS],
        cwd=PROJECT_DIR,
        env={
            "DJANGO_SETTINGS_MODULE": "imagerec.settings.test",
            "PATH": "/usr/bin:/bin",
            "DATABASE_URL": settings.DATABASE_URL,
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "False"]
