"""`make run`: the whole site on this machine, from nothing, and stopped cleanly by Ctrl-C.

Starts (or reuses) the embedded PostgreSQL and Redis unless DATABASE_URL / CELERY_BROKER_URL
are set, migrates, creates the admin account and prints its login, starts a Celery worker
(with the beat scheduler that runs the sweeper), loads the demo images once, and serves the
site on http://127.0.0.1:8000/.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PROJECT_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_DIR))

from imagerec import devservices  # noqa: E402
from similarity.identity import IMAGENET_WEIGHTS_URL, imagenet_weights_cached, imagenet_weights_path  # noqa: E402

HOST, PORT = "127.0.0.1", int(os.environ.get("PORT", "8000"))


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def manage(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=PROJECT_DIR, env=env, check=True)


def choose_weights(env: dict) -> None:
    """Use the ImageNet weights when they are here; otherwise run the demo on random ones."""
    if env.get("EMBEDDING_WEIGHTS"):
        say(f"Embedding weights: {env['EMBEDDING_WEIGHTS']} (from EMBEDDING_WEIGHTS)")
        return
    if imagenet_weights_cached():
        env["EMBEDDING_WEIGHTS"] = "imagenet"
        say(f"Embedding weights: ImageNet ({imagenet_weights_path()})")
        return
    env["EMBEDDING_WEIGHTS"] = "random"
    # Untrained features crowd together: unrelated demo images score about 0.96-0.98,
    # resized copies 0.99 and above, so only the stricter threshold means "duplicate".
    env.setdefault("NEAR_DUPLICATE_THRESHOLD", "0.99")
    say(
        "ImageNet weights for ResNet18 not found, so this demo runs on RANDOM weights\n"
        "    (similarities reflect colour and texture, not content; every page says so).\n"
        f"    For real weights: download {IMAGENET_WEIGHTS_URL}\n"
        f"    to {imagenet_weights_path()} (or set EMBEDDING_WEIGHTS=/path/to/resnet18.pth)\n"
        "    and run `make run` again; then recompute with `manage.py embed_images --stale`."
    )


def port_is_free() -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, PORT))
        except OSError:
            return False
    return True


def stop(process: subprocess.Popen | None, name: str, timeout: float = 30) -> None:
    if process is None or process.poll() is not None:
        return
    say(f"Stopping the {name} ...")
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def main() -> int:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE", "imagerec.settings.local")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    data_dir = Path(env.get("IMAGEREC_DATA_DIR") or devservices.DEFAULT_DATA_DIR)
    if not port_is_free():
        say(f"Port {PORT} on {HOST} is already in use: stop what runs there, or set PORT=8001.")
        return 1

    # Embedded servers for what is not configured; stopped at the end only if started here.
    ds = devservices
    embedded = [
        ("PostgreSQL + pgvector", "DATABASE_URL", "postgres", ds.postgres_running, ds.postgres_start, ds.postgres_stop),
        ("Redis", "CELERY_BROKER_URL", "redis", ds.redis_running, ds.redis_start, ds.redis_stop),
    ]
    to_stop = []
    for name, variable, folder, running, start, stop_service in embedded:
        if env.get(variable):
            continue
        say(f"{name} (embedded, data in {data_dir / folder}) ...")
        if not running(data_dir):
            to_stop.append((name, stop_service))
        start(data_dir)

    choose_weights(env)
    worker = server = None
    interrupted = False

    def on_signal(signum, frame):
        nonlocal interrupted
        interrupted = True
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        say("Applying database migrations ...")
        manage("migrate", "--noinput", "-v", "0", env=env)
        manage("ensure_admin", env=env)

        logs = data_dir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        say(f"Starting the Celery worker and the sweeper (log: {logs / 'worker.log'}) ...")
        worker_log = open(logs / "worker.log", "ab")
        worker = subprocess.Popen(
            [
                sys.executable, "-m", "celery", "-A", "imagerec", "worker",
                "--beat", f"--schedule={data_dir / 'celerybeat-schedule'}",
                "--concurrency=1", "--loglevel=INFO",
            ],
            cwd=PROJECT_DIR, env=env, stdout=worker_log, stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches it through us, in order
        )

        say("Loading the demo images (once) ...")
        manage("load_demo_images", env=env)

        server = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"{HOST}:{PORT}", "--noreload"],
            cwd=PROJECT_DIR, env=env, start_new_session=True,
        )
        time.sleep(1.5)
        say(f"The site is at http://{HOST}:{PORT}/   the admin at http://{HOST}:{PORT}/admin/")
        say("Press Ctrl-C to stop everything.")
        while True:
            if worker.poll() is not None:
                say(f"The worker stopped unexpectedly; see {logs / 'worker.log'}")
                return 1
            if server.poll() is not None:
                say("The web server stopped.")
                return server.returncode or 0
            time.sleep(0.5)
    except KeyboardInterrupt:
        return 0
    except subprocess.CalledProcessError as error:
        say(f"A set-up step failed: {' '.join(map(str, error.cmd))}")
        return 1
    finally:
        stop(server, "web server", timeout=10)
        stop(worker, "worker (it finishes its current batch)")
        for name, stop_service in reversed(to_stop):
            say(f"Stopping {name} ...")
            stop_service(data_dir)
        say("Stopped." if not interrupted else "Stopped (signal).")


if __name__ == "__main__":
    sys.exit(main())
