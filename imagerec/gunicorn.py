"""gunicorn's configuration (`gunicorn --config python:imagerec.gunicorn imagerec.wsgi`).

https://docs.gunicorn.org/en/stable/settings.html. Environment variables override: PORT
(platforms set it), WEB_CONCURRENCY (worker processes), GUNICORN_CMD_ARGS (anything else).
"""

import os

# The port platforms assign, on every interface: a container's port is its only way in.
bind = f"0.0.0.0:{os.environ.get('PORT', '8000')}"

# Pages spend their time in PostgreSQL and in rendering, about half each: two processes per
# CPU keep the CPUs busy while others wait on the database. Web processes never load torch,
# so each stays small.
workers = int(os.environ.get("WEB_CONCURRENCY") or 2 * len(os.sched_getaffinity(0)))

# An upload of many photos is the slowest request; anything slower is stuck.
timeout = 120
graceful_timeout = 30
# Behind a proxy that keeps connections open to us.
keepalive = 5
# Recycle workers now and then: memory a request grew is given back.
max_requests = 2000
max_requests_jitter = 200

accesslog = "-"
# Client, request line, status, bytes, duration in milliseconds, the site's request id,
# referrer, user agent.
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms rid=%({x-request-id}o)s "%(f)s" "%(a)s"'

# Prometheus counts of every worker process in one scrape (prometheus-client's multiprocess
# mode): the master prepares the folder before forking and removes it at exit.
from imagerec.observability.multiprocess import (  # noqa: E402
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
        "filters": {"access": {"()": "imagerec.observability.logs.AccessLogFilter"}},
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
