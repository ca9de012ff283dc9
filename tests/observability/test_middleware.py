"""Request ids: the caller's when sensible, a new one otherwise, always returned."""

import subprocess
import sys

import pytest

from tests.conftest import PROJECT_DIR

pytestmark = pytest.mark.django_db


def test_a_request_without_an_id_gets_a_new_one_each_time(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]

    assert len(first) == 32 and int(first, 16) >= 0
    assert first != second


@pytest.mark.parametrize("incoming", ["3f0c9d2e-8a41-4b7e-9a55-0d1f6c2b7e10", "Root=1-67891233-abcdef012345678912345678"])
def test_the_callers_id_is_kept(client, incoming):
    response = client.get("/", headers={"X-Request-ID": incoming})

    assert response.status_code == 200
    assert response["X-Request-ID"] == incoming


@pytest.mark.parametrize("incoming", ["two words", "x" * 201, "<script>", "id\ttab"])
def test_an_id_that_could_break_log_lines_is_replaced(client, incoming):
    response = client.get("/", headers={"X-Request-ID": incoming})

    assert response.status_code == 200
    assert response["X-Request-ID"] != incoming
    assert len(response["X-Request-ID"]) == 32


def test_the_id_is_returned_on_errors_too(client):
    response = client.get("/images/999999/", headers={"X-Request-ID": "lost-image"})

    assert response.status_code == 404
    assert response["X-Request-ID"] == "lost-image"


def test_an_unknown_log_format_is_refused_with_a_clear_message():
    code = "import django; django.setup()"
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=PROJECT_DIR,
        env={
            "PATH": "/usr/bin:/bin",
            "DJANGO_SETTINGS_MODULE": "imagerec.settings.test",
            "DATABASE_URL": "postgres://u@db.example.org:5432/imagerec",
            "CELERY_BROKER_URL": "redis://broker.example.org:6379/0",
            "LOG_FORMAT": "xml",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert result.returncode != 0
    assert "LOG_FORMAT must be 'plain' or 'json', not 'xml'." in result.stderr
