"""Production settings refuse to start with unsafe or missing configuration."""

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_DIR

GOOD = {
    "SECRET_KEY": "x" * 50,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "images.example.org",
    "DATABASE_URL": "postgres://imagerec:pw@db.example.org:5432/imagerec",
    "CELERY_BROKER_URL": "redis://broker.example.org:6379/0",
}


def load_production_settings(**overrides):
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "imagerec.settings.production", **GOOD, **overrides}
    env = {key: value for key, value in env.items() if value is not None}
    code = "import django; django.setup(); from django.conf import settings; print(settings.DEBUG)"
    return subprocess.run([sys.executable, "-c", code], cwd=PROJECT_DIR, env=env, capture_output=True, text=True)


def test_production_starts_with_a_complete_configuration():
    result = load_production_settings()
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        ({"SECRET_KEY": None}, "SECRET_KEY must be set"),
        ({"SECRET_KEY": "short"}, "SECRET_KEY must be set"),
        ({"DEBUG": None}, "DEBUG must be off"),
        ({"DEBUG": "true"}, "DEBUG must be off"),
        ({"ALLOWED_HOSTS": None}, "ALLOWED_HOSTS must list"),
        ({"ALLOWED_HOSTS": "*"}, "ALLOWED_HOSTS must list"),
        ({"DATABASE_URL": None}, "DATABASE_URL must name"),
        ({"CELERY_BROKER_URL": None}, "CELERY_BROKER_URL must name"),
    ],
)
def test_production_refuses_unsafe_configuration(overrides, complaint):
    result = load_production_settings(**overrides)
    assert result.returncode != 0
    assert "Production settings refuse to start" in result.stderr
    assert complaint in result.stderr
