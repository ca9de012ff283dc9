"""The site under gunicorn as the Procfile runs it: several worker processes, one /metrics.

Real `gunicorn --config python:imagerec.gunicorn` processes on a Unix socket, against the
test database and broker.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.conf import settings
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import PROJECT_DIR, database_url, wait_for


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str):
        super().__init__("localhost", timeout=30)
        self.socket_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(self.socket_path)


class Gunicorn:
    def __init__(self, socket_path: str, log_path: Path, env: dict):
        self.socket_path = socket_path
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "--config", "python:imagerec.gunicorn", "imagerec.wsgi"],
            cwd=PROJECT_DIR, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._answers, timeout=60, interval=0.2, message=f"gunicorn to answer:\n{self.log()}")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{self.log()}")
        try:
            return self.get("/healthz")[0] == 200
        except OSError:
            return False

    def connection(self) -> http.client.HTTPConnection:
        return UnixHTTPConnection(self.socket_path)

    def get(self, path: str, headers: dict | None = None) -> tuple[int, dict, bytes]:
        connection = self.connection()
        try:
            connection.request("GET", path, headers=headers or {})
            response = connection.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            connection.close()

    def get_from_both_processes(self, path: str) -> list[bytes]:
        """GET twice, answered by two different worker processes.

        A sync worker busy reading a request that has not finished arriving cannot accept
        another connection: the second request must go to the other process.
        """
        held = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        held.settimeout(30)
        held.connect(self.socket_path)
        try:
            held.sendall(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n".encode())
            status, _, other = self.get(path)
            assert status == 200
            held.sendall(b"Connection: close\r\n\r\n")
            response = http.client.HTTPResponse(held)
            response.begin()
            assert response.status == 200
            return [response.read(), other]
        finally:
            held.close()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=30)
        self._log.close()


@pytest.fixture
def start_gunicorn(transactional_db, tmp_path):
    """start_gunicorn(**env) -> a running Gunicorn with two worker processes; stopped after the test."""
    from django.db import connection

    socket_dir = tempfile.mkdtemp(prefix="imagerec-gunicorn-")  # short: socket paths are limited
    servers: list[Gunicorn] = []

    def start(**extra_env) -> Gunicorn:
        env = {
            # The server makes or empties its own folder; the variable is set only by the test.
            **{key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"},
            "DJANGO_SETTINGS_MODULE": "imagerec.settings.test",
            "DATABASE_URL": database_url(connection.settings_dict),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "IMAGEREC_TEST_SESSION": settings.TEST_SESSION,
            # No control socket: its default path is one per machine, shared with other servers.
            "GUNICORN_CMD_ARGS": f"--bind unix:{socket_dir}/web.sock --workers 2 --no-control-socket",
            **extra_env,
        }
        server = Gunicorn(f"{socket_dir}/web.sock", tmp_path / f"gunicorn-{len(servers)}.log", env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
    shutil.rmtree(socket_dir, ignore_errors=True)


def healthz_requests(body: bytes) -> float:
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            if sample.name == "imagerec_http_request_duration_seconds_count" and sample.labels["view"] == "healthz":
                return sample.value
    return 0.0


def test_each_scrape_counts_every_worker_process_and_a_restart_starts_from_zero(start_gunicorn, tmp_path):
    metrics_dir = tmp_path / "prometheus"
    server = start_gunicorn(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    baseline = healthz_requests(server.get("/metrics")[2])  # the start-up check's requests

    server.get_from_both_processes("/healthz")

    # Whichever process answers the scrape, it reports both processes' requests.
    scrapes = server.get_from_both_processes("/metrics")
    assert [healthz_requests(body) for body in scrapes] == [baseline + 2, baseline + 2]

    # A crash leaves the counts behind; the next start must not add them to its own.
    server.stop(signal.SIGKILL)
    assert list(metrics_dir.glob("*.db"))
    server = start_gunicorn(PROMETHEUS_MULTIPROC_DIR=str(metrics_dir))
    restarted = healthz_requests(server.get("/metrics")[2])
    assert restarted < baseline + 2
    server.get("/healthz")
    assert healthz_requests(server.get("/metrics")[2]) == restarted + 1


def test_without_a_folder_given_the_server_makes_one_and_removes_it_at_exit(start_gunicorn, tmp_path):
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    server = start_gunicorn(TMPDIR=str(temporary))

    made = list(temporary.glob("imagerec-metrics-*"))
    assert len(made) == 1
    assert list(made[0].glob("*.db"))
    scrapes = server.get_from_both_processes("/metrics")
    assert healthz_requests(scrapes[0]) == healthz_requests(scrapes[1]) >= 1

    server.stop()
    assert list(temporary.iterdir()) == []


def test_json_logs_carry_the_request_id_that_the_response_returns(start_gunicorn):
    server = start_gunicorn(LOG_FORMAT="json")

    status, headers, _ = server.get("/images/999999/", headers={"X-Request-ID": "trace-4f1c"})
    assert status == 404
    assert headers["X-Request-ID"] == "trace-4f1c"
    status, headers, _ = server.get("/images/999998/", headers={"X-Request-ID": "not acceptable"})
    fresh = headers["X-Request-ID"]
    assert fresh != "not acceptable" and len(fresh) == 32

    def not_found_lines():
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith("{")]
        found = [line for line in lines if line.get("logger") == "django.request"]
        return found if len(found) == 2 else None

    not_found = wait_for(not_found_lines, timeout=10, message="the two 404 log lines")
    assert [(line["message"], line["request_id"], line["level"]) for line in not_found] == [
        ("Not Found: /images/999999/", "trace-4f1c", "WARNING"),
        ("Not Found: /images/999998/", fresh, "WARNING"),
    ]
    # gunicorn's access log line, JSON too, names the same request.
    access = [json.loads(line) for line in server.log().splitlines() if '"gunicorn.access"' in line]
    assert any(line["request_id"] == "trace-4f1c" and "/images/999999/" in line["message"] for line in access)


def test_the_access_log_records_nothing_that_identifies_a_visitor(start_gunicorn):
    server = start_gunicorn()
    visitor = {
        "X-Forwarded-For": "203.0.113.77",
        "User-Agent": "VisitorBrowser/9.1 unique-7781",
        "Referer": "https://example.org/a-private-page",
    }
    status, _, _ = server.get("/images/999997/", headers={**visitor, "X-Request-ID": "trace-access-1"})
    assert status == 404

    access_line = wait_for(
        lambda: next((line for line in server.log().splitlines() if "rid=trace-access-1" in line), None),
        timeout=10,
        message="the access log line of the request",
    )
    assert "GET /images/999997/" in access_line and " 404 " in access_line
    for value in visitor.values():
        assert value not in server.log()
