"""Read replicas: visitors' reads answered by a real streaming replica, writes on the primary.

The end-to-end test runs its own primary and `pg_basebackup -R` replica (the embedded
PostgreSQL's binaries) and the site under gunicorn, pointed at both, and talks to it over HTTP.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import uuid

import psycopg2
import pytest
import requests
from django.conf import settings

from devtools import services
from devtools.workers import PROJECT_DIR, wait_for
from gallery.models import Image
from imagerec import db_router
from imagerec.db_router import ReplicaRouter, replica_reads
from tests.conftest import encode, photo_like

# --- The router's rules -------------------------------------------------------------


@pytest.fixture
def one_replica(monkeypatch):
    monkeypatch.setattr(db_router, "replica_aliases", lambda: ["replica_0"])
    return ReplicaRouter()


def test_reads_go_to_the_primary_unless_a_visitors_request_allows_a_replica(one_replica):
    from django.contrib.sessions.models import Session

    assert one_replica.db_for_read(Image) == "default"  # a worker, a command
    with replica_reads():
        assert one_replica.db_for_read(Image) == "replica_0"
        assert one_replica.db_for_read(Session) == "default"  # sessions are read right after login
    assert one_replica.db_for_read(Image) == "default"


def test_a_write_sends_the_rest_of_the_requests_reads_to_the_primary(one_replica):
    with replica_reads():
        assert one_replica.db_for_write(Image) == "default"
        assert one_replica.db_for_read(Image) == "default"
    with replica_reads():  # the next request starts afresh
        assert one_replica.db_for_read(Image) == "replica_0"


def test_migrations_run_on_the_primary_only(one_replica):
    assert one_replica.allow_migrate("default", "gallery") and not one_replica.allow_migrate("replica_0", "gallery")


# --- A real primary and streaming replica -------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ids_named(url: str, name: str) -> list[int]:
    with psycopg2.connect(url) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT id FROM gallery_image WHERE original_name = %s", [name])
        rows = [row[0] for row in cursor.fetchall()]
    connection.close()
    return rows


def execute(url: str, statement: str):
    connection = psycopg2.connect(url)
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute(statement)
            return cursor.fetchone()
    finally:
        connection.close()


class Site:
    """The site under gunicorn, and an admin's HTTP session with it."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.staff = requests.Session()

    def get(self, path: str, **options) -> requests.Response:
        return requests.get(self.base_url + path, timeout=20, **options)

    def log_in(self, username: str, password: str) -> None:
        login = self.base_url + "/admin/login/"
        self.staff.get(login, timeout=20)
        response = self.staff.post(
            login, timeout=20, allow_redirects=False,
            data={"username": username, "password": password, "next": "/admin/", "csrfmiddlewaretoken": self.staff.cookies["csrftoken"]},
        )
        assert response.status_code == 302, response.text[:500]

    def upload(self, name: str, content: bytes) -> None:
        add = self.base_url + "/admin/gallery/image/add/"
        self.staff.get(add, timeout=20)
        response = self.staff.post(
            add, timeout=30, allow_redirects=False,
            data={"caption": "", "csrfmiddlewaretoken": self.staff.cookies["csrftoken"]},
            files=[("files", (name, content, "image/jpeg"))],
        )
        assert response.status_code == 302, response.text[:500]


@pytest.mark.end_to_end
def test_visitors_reads_are_answered_by_a_streaming_replica():
    base = settings.TEST_SESSION_DIR / "replication" / uuid.uuid4().hex[:8]
    primary_dir, replica_dir = base / "primary", base / "replica"
    primary_port, replica_port, web_port = free_port(), free_port(), free_port()
    primary_url, replica_url = services.postgres_tcp_url(primary_port), services.postgres_tcp_url(replica_port)
    site_env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "imagerec.settings.test",
        "DATABASE_URL": primary_url,
        "DATABASE_REPLICA_URLS": replica_url,
        "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
        "IMAGEREC_TEST_SESSION": settings.TEST_SESSION,
        "DJANGO_SUPERUSER_PASSWORD": "not-a-real-password",
    }

    def manage(*arguments: str) -> str:
        return subprocess.run(
            [sys.executable, "manage.py", *arguments], cwd=PROJECT_DIR, env=site_env,
            check=True, capture_output=True, text=True, timeout=180,
        ).stdout

    web = None
    started = []
    try:
        services.postgres_start(primary_dir, port=primary_port)
        started.append(primary_dir)
        manage("migrate", "--noinput")
        manage("createsuperuser", "--noinput", "--username", "curator", "--email", "curator@example.com")
        services.postgres_replica_create(replica_dir, primary_port=primary_port)
        services.postgres_start(replica_dir, port=replica_port)
        started.append(replica_dir)
        assert execute(replica_url, "SELECT pg_is_in_recovery()") == (True,)

        # The connection a visitor's read is routed to is the replica's; outside one, the primary's.
        probe = (
            "from django.db import connections, router\n"
            "from gallery.models import Image\n"
            "from imagerec.db_router import replica_reads\n"
            "with replica_reads():\n"
            "    alias = router.db_for_read(Image)\n"
            "for name in (alias, router.db_for_read(Image)):\n"
            "    with connections[name].cursor() as cursor:\n"
            "        cursor.execute('SELECT pg_is_in_recovery()')\n"
            "        print(name, cursor.fetchone()[0])\n"
        )
        assert manage("shell", "--verbosity", "0", "-c", probe).split() == ["replica_0", "True", "default", "False"]

        log = open(base / "gunicorn.log", "wb")
        web = subprocess.Popen(
            [
                sys.executable, "-m", "gunicorn", "--config", "python:imagerec.gunicorn", "imagerec.wsgi",
                "--bind", f"127.0.0.1:{web_port}", "--workers", "1",
            ],
            cwd=PROJECT_DIR, env=site_env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        site = Site(f"http://127.0.0.1:{web_port}")

        def answering():
            assert web.poll() is None, (base / "gunicorn.log").read_text(errors="replace")
            try:
                return site.get("/").status_code == 200
            except requests.ConnectionError:
                return False

        wait_for(answering, timeout=60, message="the site to answer")
        site.log_in("curator", "not-a-real-password")

        # An upload lands on the primary, then appears on the replica and on visitors' pages.
        site.upload("first.jpg", encode(photo_like(1)))
        [first] = ids_named(primary_url, "first.jpg")
        wait_for(lambda: ids_named(replica_url, "first.jpg"), timeout=30, message="replication")
        assert site.get(f"/images/{first}/").status_code == 200

        # With the replica held back, a new upload is on the primary only: the admin (primary)
        # shows it, visitors' pages and the recommendation API (replica) do not know it yet.
        execute(replica_url, "SELECT pg_wal_replay_pause()")
        wait_for(lambda: execute(replica_url, "SELECT pg_get_wal_replay_pause_state()") == ("paused",), timeout=30)
        site.upload("second.jpg", encode(photo_like(2)))
        [second] = ids_named(primary_url, "second.jpg")
        assert ids_named(replica_url, "second.jpg") == []
        assert site.staff.get(f"{site.base_url}/admin/gallery/image/{second}/change/", timeout=20).status_code == 200
        assert site.get(f"/images/{second}/").status_code == 404
        assert site.get(f"/api/images/{second}/similar/").status_code == 404
        listing = site.get("/").text
        assert f"/images/{first}/" in listing and f"/images/{second}/" not in listing

        # Once the replica catches up, visitors see it too.
        execute(replica_url, "SELECT pg_wal_replay_resume()")
        wait_for(lambda: ids_named(replica_url, "second.jpg"), timeout=30, message="replication to resume")
        assert site.get(f"/images/{second}/").status_code == 200
        assert site.get(f"/api/images/{second}/similar/").status_code == 200
        assert re.search(rf"/images/{second}/", site.get("/").text)
    finally:
        if web is not None and web.poll() is None:
            web.terminate()
            try:
                web.wait(timeout=20)
            except subprocess.TimeoutExpired:
                web.kill()
                web.wait(timeout=10)
        for data_dir in reversed(started):
            services.postgres_stop(data_dir)
