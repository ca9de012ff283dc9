"""Settings: importing them starts nothing, and production refuses unsafe or missing configuration."""

import subprocess
import sys

import psutil
import pytest

from tests.conftest import PROJECT_DIR

GOOD = {
    "SECRET_KEY": "x" * 50,
    "DEBUG": "false",
    "ALLOWED_HOSTS": "images.example.org",
    "DATABASE_URL": "postgres://imagerec:pw@db.example.org:5432/imagerec",
    "CELERY_BROKER_URL": "redis://broker.example.org:6379/0",
    "METRICS_TOKEN": "a-long-random-scrape-token",
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
        ({"METRICS_TOKEN": None}, "METRICS_TOKEN must be set"),
        ({"METRICS_TOKEN": None, "METRICS_PUBLIC": "false"}, "METRICS_TOKEN must be set"),
    ],
)
def test_production_refuses_unsafe_configuration(overrides, complaint):
    result = load_production_settings(**overrides)
    assert result.returncode != 0
    assert "Production settings refuse to start" in result.stderr
    assert complaint in result.stderr


def test_production_serves_public_metrics_only_when_the_operator_says_so():
    result = load_production_settings(METRICS_TOKEN=None, METRICS_PUBLIC="true")
    assert result.returncode == 0, result.stderr


# --- Importing settings starts nothing -----------------------------------------------------

SETUP_AND_READ = (
    "import django; django.setup(); from django.conf import settings; "
    "print(settings.DATABASES['default']['NAME'], settings.CELERY_BROKER_URL)"
)
GIVEN = {"DATABASE_URL": "postgres://u@db.example.org:5432/imagerec", "CELERY_BROKER_URL": "redis://broker.example.org:6379/0"}
NO_URLS = {"DATABASE_URL": "", "CELERY_BROKER_URL": ""}  # set, but empty: .env cannot fill them in


def import_settings(module: str, data_dir, **variables):
    env = {"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": module, "IMAGEREC_DATA_DIR": str(data_dir), **variables}
    return subprocess.run(
        [sys.executable, "-c", SETUP_AND_READ], cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=60
    )


def processes_using(path) -> list[str]:
    found = []
    for process in psutil.process_iter(["cmdline"]):
        command = " ".join(process.info["cmdline"] or [])
        if str(path) in command:
            found.append(command)
    return found


@pytest.mark.parametrize(
    ("module", "variables", "outcome"),
    [
        ("imagerec.settings.local", NO_URLS, "python -m devtools.services start"),
        ("imagerec.settings.test", NO_URLS, "make test"),
        ("imagerec.settings.local", GIVEN, "imagerec redis://broker.example.org:6379/0"),
        ("imagerec.settings.test", GIVEN, "imagerec redis://broker.example.org:6379/0"),
        ("imagerec.settings.production", GOOD, "imagerec redis://broker.example.org:6379/0"),
    ],
    ids=["local without URLs", "test without URLs", "local", "test", "production"],
)
def test_importing_settings_starts_no_server(tmp_path, module, variables, outcome):
    data_dir = tmp_path / "data"
    result = import_settings(module, data_dir, **variables)

    if variables is NO_URLS:
        # One clear message that names the command that starts the servers.
        assert result.returncode != 0
        assert "ImproperlyConfigured" in result.stderr and outcome in result.stderr
    else:
        assert result.returncode == 0, result.stderr
        assert outcome in result.stdout
    # Before, local and test settings created and started an embedded PostgreSQL and Redis
    # in the data dir the moment they were imported.
    assert not data_dir.exists()
    assert processes_using(data_dir) == []
