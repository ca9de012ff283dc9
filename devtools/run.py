"""`make run`: the whole site on this machine, from nothing; Ctrl-C stops all of it.

Starts the embedded PostgreSQL and Redis (unless DATABASE_URL / CELERY_BROKER_URL name
others), chooses the weights, migrates, creates the admin account and prints its login,
loads the demo images once, then runs the Procfile's web, worker, searcher and beat with honcho.
The embedded servers are stopped at the end only if this run started them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from devtools import services
from similarity.encoders.registry import RESNET18
from similarity.weights import imagenet_weights_cached, imagenet_weights_path, imagenet_weights_url

PROJECT_DIR = Path(__file__).resolve().parent.parent
RUN_BLOCK = "make run"
HOST, PORT = "127.0.0.1", os.environ.get("PORT", "8000")


def say(message: str) -> None:
    print(f"==> {message}", flush=True)


def weights_choice(configured: dict) -> dict[str, str]:
    """Use the ImageNet weights when they are here; otherwise run the demo on random ones."""
    if configured.get("EMBEDDING_WEIGHTS"):
        say(f"Embedding weights: {configured['EMBEDDING_WEIGHTS']} (from EMBEDDING_WEIGHTS)")
        return {}
    # Before Django's settings are chosen: the site's default encoder, named rather than configured.
    if imagenet_weights_cached(RESNET18):
        say(f"Embedding weights: ImageNet ({imagenet_weights_path(RESNET18)})")
        return {"EMBEDDING_WEIGHTS": "imagenet"}
    say(
        "ImageNet weights for ResNet18 not found, so this demo runs on RANDOM weights\n"
        "    (similarities reflect colour and texture, not content; every page says so).\n"
        f"    For real weights: download {imagenet_weights_url(RESNET18)}\n"
        f"    to {imagenet_weights_path(RESNET18)} (or set EMBEDDING_WEIGHTS=/path/to/resnet18.pth)\n"
        "    and run `make run` again; then recompute with `manage.py embed_images --stale`."
    )
    choice = {"EMBEDDING_WEIGHTS": "random"}
    if "NEAR_DUPLICATE_THRESHOLD" not in configured:
        # Untrained features crowd together: unrelated demo images score about 0.96-0.98,
        # resized copies 0.99 and above, so only the stricter threshold means "duplicate".
        choice["NEAR_DUPLICATE_THRESHOLD"] = "0.99"
    return choice


def honcho_start(env: dict) -> int:
    """The Procfile's processes until Ctrl-C or SIGTERM; honcho stops them in order."""
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "web", "worker", "searcher", "beat"], cwd=PROJECT_DIR, env=env
    )
    # Ctrl-C reaches honcho directly (same process group); a SIGTERM sent to this script
    # alone is passed on. Either way, wait for honcho to finish stopping its processes.
    signal.signal(signal.SIGTERM, lambda signum, frame: honcho.send_signal(signal.SIGTERM))
    while True:
        try:
            return honcho.wait()
        except KeyboardInterrupt:
            continue


def main() -> int:
    data_dir = Path(os.environ.get("IMAGEREC_DATA_DIR") or services.DEFAULT_DATA_DIR)
    # The choice goes to .env too, so a `manage.py` typed by hand later makes the same one.
    configured = {**services.env_file_values(outside=RUN_BLOCK), **os.environ}
    services.env_file_block_write(RUN_BLOCK, weights_choice(configured))
    env = {
        **os.environ,
        **services.env_file_values(),
        "DJANGO_SETTINGS_MODULE": "imagerec.settings.local",
        "PYTHONUNBUFFERED": "1",
        # The Procfile names plain `gunicorn`, `celery` and `python`: this environment's.
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        # gunicorn on this machine only, reloading when the code changes.
        "GUNICORN_CMD_ARGS": f"--bind {HOST}:{PORT} --reload --workers 2",
    }
    say(f"PostgreSQL + pgvector and Redis (embedded, data in {data_dir}) ...")
    given = {**services.env_file_values(outside=services.ENV_BLOCK), **os.environ}
    urls, started = services.services_start(data_dir, given=given)
    services.env_file_block_write(services.ENV_BLOCK, urls)
    env.update(urls)
    try:
        for step in (["migrate", "--noinput", "-v", "0"], ["ensure_admin"], ["load_demo_images"]):
            subprocess.run([sys.executable, "manage.py", *step], cwd=PROJECT_DIR, env=env, check=True)
        say(f"The site is at http://{HOST}:{PORT}/   the admin at http://{HOST}:{PORT}/admin/")
        say("Press Ctrl-C to stop everything.")
        return honcho_start(env)
    except subprocess.CalledProcessError as error:
        say(f"A set-up step failed: {' '.join(map(str, error.cmd))}")
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        if started:
            say("Stopping the embedded servers this run started ...")
            services.services_stop(data_dir, started)
            remaining = {variable: url for variable, url in urls.items() if variable not in started}
            services.env_file_block_write(services.ENV_BLOCK, remaining)
        say("Stopped.")


if __name__ == "__main__":
    sys.exit(main())
