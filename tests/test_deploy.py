"""Deployment: production settings pass Django's deploy checks."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

from tests.harness import PROJECT_DIR

HOST = "images.example.org"
VENV_BIN = Path(sys.executable).parent


def production_environment(**overrides) -> dict:
    """What a production process gets: its settings from the environment and nothing else."""
    environment = {
        "PATH": f"{VENV_BIN}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        "PYTHONUNBUFFERED": "1",
        "DJANGO_SETTINGS_MODULE": "imagerec.settings.production",
        "SECRET_KEY": secrets.token_urlsafe(50),
        "DEBUG": "false",
        "ALLOWED_HOSTS": HOST,
        "DATABASE_URL": "postgres://imagerec:secret@db.example.org:5432/imagerec",
        "CELERY_BROKER_URL": "redis://broker.example.org:6379/0",
        # Tests never download weights (the Docker image has the ImageNet ones); the check
        # that says they are missing here is about this machine, not the deployment.
        "EMBEDDING_WEIGHTS": "random",
    }
    environment.update(overrides)
    return environment


def manage(*arguments: str, environment: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *arguments],
        cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=timeout,
    )


# --- Settings -------------------------------------------------------------------------

HSTS = {"SECURE_HSTS_SECONDS": "31536000", "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true", "SECURE_HSTS_PRELOAD": "true"}


def test_production_settings_pass_the_deploy_check():
    result = manage("check", "--deploy", "--fail-level", "WARNING", environment=production_environment(**HSTS))
    assert result.returncode == 0, result.stderr
    assert "no issues" in result.stdout


def test_the_deploy_check_asks_for_hsts_until_it_is_set():
    """HTTPS redirect, secure cookies, nosniff, referrer policy: all on; HSTS is the operator's call."""
    result = manage("check", "--deploy", "--fail-level", "WARNING", environment=production_environment())
    assert result.returncode != 0
    assert re.findall(r"\((security\.W\d+)\)", result.stderr) == ["security.W004"], result.stderr
