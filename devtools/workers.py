"""Real worker processes for tests and benchmarks: `celery worker` started as production does.

Imported by the tests (``tests/conftest.py`` re-exports it) and by the benchmarks, so both drive
workers the same way.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote

PROJECT_DIR = Path(__file__).resolve().parent.parent


def wait_for(predicate, timeout: float = 60, interval: float = 0.1, message: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"Timed out after {timeout}s waiting for {message}")


def database_url(settings_dict: dict) -> str:
    """The URL of a Django DATABASES entry (the test database, once created)."""
    user = quote(settings_dict.get("USER") or "", safe="")
    password = quote(settings_dict.get("PASSWORD") or "", safe="")
    credentials = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or ""
    name = quote(settings_dict["NAME"], safe="")
    if host.startswith("/"):
        return f"postgres://{credentials}/{name}?host={quote(host, safe='/')}"
    port = f":{settings_dict['PORT']}" if settings_dict.get("PORT") else ""
    return f"postgres://{credentials}{host}{port}/{name}"


class WorkerProcess:
    """A `celery worker` started as a separate process, as in production."""

    def __init__(
        self,
        env: dict,
        *,
        concurrency: int = 1,
        beat: bool = False,
        queues: str = "",
        command_prefix: tuple[str, ...] = (),
        arguments: tuple[str, ...] = (),
    ):
        self.env = env
        self.concurrency = concurrency
        self.beat = beat
        self.queues = queues
        self.command_prefix = command_prefix  # e.g. `ip netns exec <name>`
        self.arguments = arguments  # more `celery worker` options, e.g. `--include=<module>`
        self.hostname = f"worker-{os.getpid()}-{time.monotonic_ns()}@imagerec"
        self.process: subprocess.Popen | None = None
        self.log_path: Path | None = None
        self._log = None

    def start(self, log_dir: Path, *, wait: bool = True) -> WorkerProcess:
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{self.hostname.split('@')[0]}.log"
        command = [
            *self.command_prefix, sys.executable, "-m", "celery", "-A", "imagerec", "worker",
            "--loglevel=INFO", f"--concurrency={self.concurrency}", "--pool=prefork",
            "--without-gossip", "--without-mingle", f"--hostname={self.hostname}",
        ]
        if self.queues:
            command.append(f"--queues={self.queues}")
        if self.beat:
            command += ["--beat", f"--schedule={log_dir / 'beat-schedule'}"]
        command += self.arguments
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(
            command, cwd=PROJECT_DIR, env={"PYTHONUNBUFFERED": "1", **self.env},
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                self.stop()  # a worker that never became ready must not outlive the test
                raise
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        """Until the worker answers Celery's own ping: its consumer and pool are up."""
        from imagerec.celery import app

        # After a broker restart the first ping finds this process's pooled connection dead
        # (and drops it); the next one connects afresh.
        connection_errors = app.connection_for_write().connection_errors
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"The worker exited early:\n{self.log()}")
            try:
                if app.control.ping(destination=[self.hostname], timeout=0.5):
                    return
            except connection_errors:
                time.sleep(0.2)
        raise RuntimeError(f"The worker did not become ready:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and its children), as a crash would."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.kill()
        if self._log:
            self._log.close()


def purge_queues(*queues: str) -> None:
    """Drop messages left by earlier work, so each test or run sees only its own."""
    from imagerec.celery import app

    with app.connection_for_write() as connection:
        for queue in queues or [queue.name for queue in app.conf.task_queues]:
            connection.default_channel.queue_purge(queue)


class NetworkNamespace:
    """Another host, as far as the network goes: a network namespace joined to this one by a
    veth pair on a private /24 of its own. This host is ``<prefix>.1``, the namespace
    ``<prefix>.2``; the namespace has no other route, so its traffic goes to this host only.
    Needs root (``ip netns``); ``remove`` takes the pair down with the namespace.
    """

    def __init__(self, name: str, prefix: str):
        # The interfaces are named after it, and interface names have 15 characters at most.
        if len(name) > 13:
            raise ValueError(f"Namespace names here have 13 characters at most: {name!r}")
        self.name, self.prefix = name, prefix
        self.host_address, self.address = f"{prefix}.1", f"{prefix}.2"
        self.host_interface = f"{name}-h"
        self.command_prefix = ("ip", "netns", "exec", name)

    def create(self) -> NetworkNamespace:
        inside = f"{self.name}-n"
        steps = [
            ["ip", "netns", "add", self.name],
            ["ip", "link", "add", self.host_interface, "type", "veth", "peer", "name", inside, "netns", self.name],
            ["ip", "addr", "add", f"{self.host_address}/24", "dev", self.host_interface],
            ["ip", "link", "set", self.host_interface, "up"],
            ["ip", "-n", self.name, "addr", "add", f"{self.address}/24", "dev", inside],
            ["ip", "-n", self.name, "link", "set", inside, "up"],
            ["ip", "-n", self.name, "link", "set", "lo", "up"],
        ]
        try:
            for step in steps:
                subprocess.run(step, check=True, capture_output=True, text=True)
        except (subprocess.CalledProcessError, OSError):
            self.remove()
            raise
        return self

    def remove(self) -> None:
        # Either may be gone already (a half-made namespace, a pair removed with it).
        subprocess.run(["ip", "netns", "delete", self.name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", self.host_interface], capture_output=True, check=False)


def free_subnet_prefixes(count: int, base: str = "10.213") -> list[str]:
    """``count`` prefixes ``<base>.N`` (of a /24) that no interface of this host uses yet."""
    used = subprocess.run(["ip", "-o", "-4", "addr"], capture_output=True, text=True, check=True).stdout
    used += subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    free = [f"{base}.{n}" for n in range(1, 255) if f"{base}.{n}." not in used]
    if len(free) < count:
        raise RuntimeError(f"No free {base}.N.0/24 networks left")
    return free[:count]
