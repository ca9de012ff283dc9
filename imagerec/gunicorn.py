"""gunicorn's configuration (`gunicorn --config python:imagerec.gunicorn imagerec.wsgi`).

https://docs.gunicorn.org/en/stable/settings.html. Environment variables override: PORT
(platforms set it), WEB_CONCURRENCY (worker processes), GUNICORN_CMD_ARGS (anything else;
options on the command line win over both).
"""

import os

from imagerec.cpus import cpu_share

# The port platforms assign, on every interface: a container's port is its only way in.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# Pages spend their time in PostgreSQL and in rendering, about half each: two processes per
# CPU keep the CPUs busy while others wait on the database. Web processes never load torch,
# so each stays small. CPUs as a container's quota allows, not as many as the host has.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * cpu_share())

# An upload of many photos is the slowest request; anything slower is stuck.
timeout = 120
graceful_timeout = 30
# Behind a proxy that keeps connections open to us.
keepalive = 5
# Recycle workers now and then: memory a request grew is given back. Rarely: a worker's start
# costs about 0.7 s of CPU (Django and the app imported again), and with cached pages answering
# ~500 requests a second per worker, every 2,000 requests meant a restart every few seconds:
# a third of /healthz's CPU per request and p99s of 150-400 ms while the others queued
# (docs/benchmarks.md, "gunicorn's worker class and recycling"). Every 100,000: ~0.01 ms a request.
max_requests = 100_000
max_requests_jitter = 10_000
# Workers signal they are alive by touching a file in this folder: in memory, so a slow or
# overlay disk (a container's) never makes a busy worker look dead.
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None

accesslog = "-"
# Request line, status, bytes, duration in milliseconds and the site's request id: nothing
# that identifies a visitor (no address, user agent or referrer), as the README's privacy
# section promises. Operators who need addresses for abuse handling log them at the proxy.
access_log_format = '"%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s'

# Prometheus counts of every worker process in one scrape (prometheus-client's multiprocess
# mode): the master prepares the folder before forking and removes it at exit.
from observability.multiprocess import (  # noqa: E402
    metrics_folder_clean,
    metrics_folder_prepare,
    worker_exited,
)

on_starting = metrics_folder_prepare
child_exit = worker_exited
on_exit = metrics_folder_clean

# LOG_FORMAT=json (as for the site's own lines, imagerec/settings/base.py): gunicorn's lines
# are JSON objects too, the access log's with the request id as a field.
if os.environ.get("LOG_FORMAT") == "json":
    logconfig_dict = {
        "formatters": {
            "generic": {
                "()": "pythonjsonlogger.json.JsonFormatter",
                "format": "%(asctime)s %(levelname)s %(name)s %(message)s",
                "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"},
            },
        },
        "filters": {"access": {"()": "observability.logs.AccessLogFilter"}},
        # Not propagated: the site's root handler would print each line a second time.
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access_console"], "propagate": False},
        },
        "handlers": {
            "console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stdout"},
            "error_console": {"class": "logging.StreamHandler", "formatter": "generic", "stream": "ext://sys.stderr"},
            "access_console": {
                "class": "logging.StreamHandler",
                "formatter": "generic",
                "filters": ["access"],
                "stream": "ext://sys.stdout",
            },
        },
    }
