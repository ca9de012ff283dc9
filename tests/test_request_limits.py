"""Request bodies and client addresses on real servers: gunicorn as the Procfile runs it, and the
documented Caddy configuration (deploy/Caddyfile) in front of it.

The requests are written on raw sockets, as a hostile client would: a huge declared length
with a few bytes behind it, chunked bodies that never end, forged X-Forwarded-For headers,
and two clients on two loopback addresses behind the one proxy.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from django.conf import settings

from devtools.workers import PROJECT_DIR, database_url, wait_for
from imagerec.middleware import request_body_limit
from tests.conftest import encode, photo_like
from tests.imagerec.test_gunicorn import Gunicorn

pytestmark = pytest.mark.end_to_end

# Small enough that a chunked body past it is quick to send, large enough for a test photo.
SEARCH_LIMIT = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class TcpGunicorn(Gunicorn):
    """The same server on a loopback port: the client address (REMOTE_ADDR) is a real one."""

    def __init__(self, port: int, log_path: Path, env: dict):
        self.port = port
        super().__init__("", log_path, env)

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)


@pytest.fixture
def upload_dir(tmp_path):
    """The server's temporary folder: where Django spools uploads (FILE_UPLOAD_TEMP_DIR unset)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    return folder


@pytest.fixture
def start_server(transactional_db, tmp_path, upload_dir):
    """start_server(**env) -> a running TcpGunicorn; stopped after the test."""
    from django.db import connection

    servers: list[TcpGunicorn] = []

    def start(**extra_env) -> TcpGunicorn:
        port = free_port()
        env = {
            **{key: value for key, value in os.environ.items() if key != "PROMETHEUS_MULTIPROC_DIR"},
            "DJANGO_SETTINGS_MODULE": "imagerec.settings.test",
            "DATABASE_URL": database_url(connection.settings_dict),
            "CELERY_BROKER_URL": settings.CELERY_BROKER_URL,
            "IMAGEREC_TEST_SESSION": settings.TEST_SESSION,
            "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --workers 2 --no-control-socket",
            "TMPDIR": str(upload_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(tmp_path / f"prometheus-{len(servers)}"),
            "SEARCH_MAX_REQUEST_BYTES": str(SEARCH_LIMIT),
            **extra_env,
        }
        (tmp_path / f"prometheus-{len(servers)}").mkdir()
        server = TcpGunicorn(port, tmp_path / f"gunicorn-{len(servers)}.log", env)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def raw_request(port: int, head: str, body: bytes = b"", source: str = "127.0.0.1") -> socket.socket:
    connection = socket.create_connection(("127.0.0.1", port), timeout=40, source_address=(source, 0))
    connection.sendall(head.encode() + b"\r\n" + body)
    return connection


def response_of(connection: socket.socket) -> tuple[int, dict, bytes]:
    response = http.client.HTTPResponse(connection)
    response.begin()
    return response.status, {name.lower(): value for name, value in response.getheaders()}, response.read()


def post_head(path: str, **headers: str) -> str:
    fields = [f"{name.replace('_', '-')}: {value}" for name, value in headers.items()]
    lines = [f"POST {path} HTTP/1.1", "Host: localhost", *fields]
    return "\r\n".join(lines) + "\r\n"


MULTIPART = "multipart/form-data; boundary=limits"
PREAMBLE = (
    b'--limits\r\nContent-Disposition: form-data; name="photo"; filename="huge.jpg"\r\n'
    b"Content-Type: image/jpeg\r\n\r\n"
)
HUGE = 300 * 1024 * 1024


def multipart(photo: bytes) -> bytes:
    return PREAMBLE + photo + b"\r\n--limits--\r\n"


def send_chunked(connection: socket.socket, total: int, chunk: int = 64 * 1024) -> None:
    """Sends ``total`` bytes of a multipart body in chunks; the server may stop reading any time."""
    try:
        connection.sendall(f"{len(PREAMBLE):x}\r\n".encode() + PREAMBLE + b"\r\n")
        for _ in range(total // chunk):
            connection.sendall(f"{chunk:x}\r\n".encode() + b"\xff" * chunk + b"\r\n")
        connection.sendall(b"0\r\n\r\n")
    except OSError:
        pass  # refused part-way: what the test wants


@pytest.mark.parametrize(
    "path", ["/api/search/", "/search/", "/admin/gallery/image/add/", "/api/images/1/", "/api/uploads/", "/api/uploads/check/"]
)
def test_a_huge_declared_body_is_refused_before_the_client_sends_it(start_server, upload_dir, path):
    server = start_server()
    declared = max(HUGE, request_body_limit(path) + 1)

    started = time.monotonic()
    connection = raw_request(server.port, post_head(path, Content_Type=MULTIPART, Content_Length=declared), PREAMBLE)
    with connection:
        status, headers, body = response_of(connection)
    # Answered at once, with only the preamble sent: nothing waited for the other 300 MB.
    assert time.monotonic() - started < 5
    assert status == 413
    if path.startswith("/api/"):
        assert json.loads(body)["error"]["status"] == 413
    else:
        assert headers["content-type"].startswith("text/html") and b"larger than" in body
    assert list(upload_dir.iterdir()) == []


def test_a_chunked_body_past_the_limit_is_refused_while_it_arrives(start_server, upload_dir):
    server = start_server()
    connection = raw_request(
        server.port, post_head("/api/search/", Content_Type=MULTIPART, Transfer_Encoding="chunked")
    )
    with connection:
        # Ten times the limit, still being sent when the answer comes.
        sender = threading.Thread(target=send_chunked, args=(connection, 10 * SEARCH_LIMIT), daemon=True)
        sender.start()
        status, _, body = response_of(connection)
    assert status == 413, body
    assert json.loads(body)["error"]["status"] == 413
    sender.join(timeout=30)
    assert list(upload_dir.iterdir()) == []


@pytest.mark.parametrize(
    "chunks",
    [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcdef\r\n0\r\n\r\n", b"3\r\nab", b"ffffffffffffffffffff\r\n"],
    ids=["bad size", "missing terminator", "cut off", "huge size"],
)
def test_a_broken_chunked_body_is_a_bad_request_logged_in_one_line(start_server, chunks):
    server = start_server()
    head = post_head("/api/search/", Content_Type=MULTIPART, Transfer_Encoding="chunked")
    with raw_request(server.port, head, chunks) as connection:
        connection.shutdown(socket.SHUT_WR)  # the client stops sending: a cut-off body ends here
        status, _, body = response_of(connection)
    assert status in (400, 413), body
    assert "Traceback" not in server.log()


def test_a_photo_within_the_limit_is_searched_with_a_length_or_chunked(start_server, worker):
    # What is tested is that the body gets through; a worker slowed by a busy machine may
    # take longer than a visitor's 10 s to embed its first photo, so it gets the time it needs.
    server = start_server(SEARCH_TIMEOUT_SECONDS="25")
    body = multipart(encode(photo_like(3)))
    assert len(body) < SEARCH_LIMIT

    sized_head = post_head("/api/search/", Content_Type=MULTIPART, Content_Length=len(body))
    with raw_request(server.port, sized_head, body) as sized:
        status, _, answer = response_of(sized)
    assert status == 200, answer
    assert json.loads(answer) == {"similar": []}  # an empty gallery

    parts = (body[:1000], body[1000:])
    chunks = b"".join(f"{len(part):x}\r\n".encode() + part + b"\r\n" for part in parts) + b"0\r\n\r\n"
    chunked_head = post_head("/api/search/", Content_Type=MULTIPART, Transfer_Encoding="chunked")
    with raw_request(server.port, chunked_head, chunks) as chunked:
        status, _, answer = response_of(chunked)
    assert status == 200, answer
    assert json.loads(answer) == {"similar": []}


# --- Behind Caddy, as deployed -----------------------------------------------------------


class Caddy:
    """deploy/Caddyfile as it is, in front of ``upstream``; plain HTTP on a loopback port."""

    def __init__(self, upstream: int, folder: Path, **env: str):
        self.port = free_port()
        self.log_path = folder / "caddy.log"
        # Its admin API off: its fixed port is one per machine, shared with other servers.
        config = folder / "Caddyfile"
        config.write_text(f"{{\n\tadmin off\n}}\n\nimport {PROJECT_DIR / 'deploy' / 'Caddyfile'}\n")
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            ["caddy", "run", "--config", str(config), "--adapter", "caddyfile"],
            env={
                "PATH": os.environ["PATH"], "HOME": str(folder), "XDG_DATA_HOME": str(folder),
                "XDG_CONFIG_HOME": str(folder), "SITE_HOST": f"http://localhost:{self.port}",
                "UPSTREAM": f"127.0.0.1:{upstream}", **env,
            },
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(self._answers, timeout=30, interval=0.2, message="Caddy to answer")

    def _answers(self) -> bool:
        if self.process.poll() is not None:
            raise RuntimeError(f"caddy exited:\n{self.log_path.read_text()}")
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
            return True
        except OSError:
            return False

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=30)
        self._log.close()


@pytest.fixture
def behind_caddy(start_server, tmp_path):
    """behind_caddy(**site_env) -> (Caddy, TcpGunicorn): the deployment's proxy and its one trusted hop."""
    if shutil.which("caddy") is None:
        reason = "caddy is not installed (Debian: apt-get install caddy; make test tries as root)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    proxies = []

    def start(**site_env) -> tuple[Caddy, TcpGunicorn]:
        # The site's own limits are the settings' defaults, as Caddy's are its file's.
        site_env = {"SEARCH_MAX_REQUEST_BYTES": str(settings.SEARCH_MAX_REQUEST_BYTES), **site_env}
        server = start_server(TRUSTED_PROXY_COUNT="1", **site_env)
        folder = tmp_path / f"caddy-{uuid.uuid4().hex[:8]}"
        folder.mkdir()
        proxies.append(Caddy(server.port, folder))
        return proxies[-1], server

    yield start
    for proxy in proxies:
        proxy.stop()


CADDY_REFUSAL = b"This request is larger than this address accepts."


@pytest.mark.parametrize(
    "path",
    ["/api/search/", "/search/", "/admin/gallery/image/add/", "/api/images/1/", "/", "/api/uploads/", "/api/uploads/check/"],
)
def test_caddy_refuses_a_body_larger_than_the_site_accepts_on_its_own(behind_caddy, path):
    proxy, server = behind_caddy()
    limit = request_body_limit(path)

    with raw_request(proxy.port, post_head(path, Content_Type=MULTIPART, Content_Length=limit + 1), PREAMBLE) as over:
        status, _, body = response_of(over)
    # Caddy's own answer: the site never saw the request.
    assert (status, body) == (413, CADDY_REFUSAL)
    assert f'"POST {path} HTTP' not in server.log()



def test_a_search_as_large_as_the_site_accepts_passes_caddy(behind_caddy):
    proxy, server = behind_caddy()
    limit = settings.SEARCH_MAX_REQUEST_BYTES
    padding = b"x" * (limit - len(PREAMBLE) - len(b"\r\n--limits--\r\n"))
    body = multipart(padding)
    assert len(body) == limit

    head = post_head("/api/search/", Content_Type=MULTIPART, Content_Length=limit)
    with raw_request(proxy.port, head, body) as within:
        status, _, answer = response_of(within)
    # The site read it all and judged the file itself: not an image.
    assert status == 400, answer[:300]
    assert "photo" in json.loads(answer)["error"]["fields"]


def test_a_chunked_body_past_the_limit_is_refused_behind_caddy(behind_caddy):
    proxy, server = behind_caddy(REQUEST_MAX_BYTES="1048576")
    head = post_head("/api/images/1/", Content_Type=MULTIPART, Transfer_Encoding="chunked")
    with raw_request(proxy.port, head) as connection:
        sender = threading.Thread(target=send_chunked, args=(connection, 10 * 1024 * 1024), daemon=True)
        sender.start()
        status, _, body = response_of(connection)
    assert status == 413, body[:300]
    sender.join(timeout=30)


def test_two_clients_behind_caddy_have_their_own_search_limits(behind_caddy):
    proxy, _ = behind_caddy(SEARCH_RATE="2/m")

    def search(client: str, forwarded: str | None = None) -> int:
        headers = {"Content_Type": MULTIPART, "Content_Length": len(b"--limits--\r\n")}
        if forwarded:
            headers["X_Forwarded_For"] = forwarded
        head = post_head("/api/search/", **headers)
        with raw_request(proxy.port, head, b"--limits--\r\n", source=client) as connection:
            return response_of(connection)[0]

    alice, bob = "127.0.0.2", "127.0.0.3"
    # An empty form: refused (400) by the view, but counted by the rate limit first.
    assert [search(alice), search(alice), search(alice)] == [400, 400, 429]
    assert [search(bob), search(bob)] == [400, 400]
    # Whatever X-Forwarded-For Alice sends, Caddy writes the address she connected from.
    assert search(alice, forwarded="198.51.100.9") == 429
    assert search(alice, forwarded=f"198.51.100.9, {bob}") == 429
