"""gunicorn hooks for prometheus-client's multiprocess mode (used by ``imagerec/gunicorn.py``).

Each gunicorn worker process counts its requests in files under PROMETHEUS_MULTIPROC_DIR,
and ``/metrics`` adds them all up, whichever process answers the scrape. The folder must be
empty when the server starts (old files would add a previous run's counts), and it must be
named before any worker imports prometheus-client: so the gunicorn master prepares it in
``on_starting``, before it forks a worker, and removes what it made in ``on_exit``. Nothing
here runs at import.

Only the web server uses the folder: Celery workers, which may run on other hosts, send
their metrics through Redis (``observability.metrics``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
_made_here: Path | None = None


def metrics_folder_prepare(server) -> None:
    """on_starting: the folder named by PROMETHEUS_MULTIPROC_DIR, emptied, or a new temporary one."""
    global _made_here
    given = os.environ.get(VARIABLE)
    if given:
        folder = Path(given)
        folder.mkdir(parents=True, exist_ok=True)
        _files_remove(folder)
    else:
        folder = _made_here = Path(tempfile.mkdtemp(prefix="imagerec-metrics-"))
        # The workers inherit it, and so read it in their settings.
        os.environ[VARIABLE] = str(folder)
    server.log.info("Prometheus multiprocess folder: %s", folder)


def worker_exited(server, worker) -> None:
    """child_exit: a dead process's live gauges stop counting (its counters stay, as they should)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def metrics_folder_clean(server) -> None:
    """on_exit: remove the temporary folder made at start, or empty the given one."""
    folder = os.environ.get(VARIABLE)
    if _made_here is not None and folder == str(_made_here):
        shutil.rmtree(_made_here, ignore_errors=True)
    elif folder:
        _files_remove(Path(folder))


def _files_remove(folder: Path) -> None:
    # Only the library's own files: a mistyped variable must not empty some other folder.
    for path in folder.glob("*.db"):
        path.unlink(missing_ok=True)
