"""Read replicas: visitors' page and API reads go to a replica, everything else to the primary.

Replicas are DATABASES entries named ``replica_<n>`` (from DATABASE_REPLICA_URLS). Reads go
to one only inside ``ReplicaReadsMiddleware``'s scope: a GET or HEAD outside the admin. So
workers, management commands, the admin and every form post read the primary, and never act
on a replica's slightly old copy. Within a request, the first write sends every later read to
the primary as well, so a request reads its own writes.
https://docs.djangoproject.com/en/5.2/topics/db/multi-db/#automatic-database-routing
"""

from __future__ import annotations

import contextlib
import random
from contextvars import ContextVar

from django.conf import settings
from django.urls import reverse

# A context variable, not a thread-local: correct under threads and asyncio alike.
_replica_reads = ContextVar("imagerec_replica_reads", default=False)

# Sessions and accounts are read right after they are written (a login, then a page), and
# by other requests than the writing one: always from the primary.
PRIMARY_ONLY_APPS = frozenset({"auth", "sessions", "contenttypes", "admin"})


def replica_aliases() -> list[str]:
    return [alias for alias in settings.DATABASES if alias.startswith("replica_")]


@contextlib.contextmanager
def replica_reads():
    """Let reads in this block go to a replica, until the block's first write."""
    token = _replica_reads.set(True)
    try:
        yield
    finally:
        _replica_reads.reset(token)


class ReplicaRouter:
    def db_for_read(self, model, **hints):
        if not _replica_reads.get() or model._meta.app_label in PRIMARY_ONLY_APPS:
            return "default"
        replicas = replica_aliases()
        return random.choice(replicas) if replicas else "default"

    def db_for_write(self, model, **hints):
        # Read-your-writes: from now on this request reads the primary.
        _replica_reads.set(False)
        return "default"

    def allow_relation(self, obj1, obj2, **hints):
        return True  # replicas are copies of the primary: every row lives in one database

    def allow_migrate(self, db, app_label, model_name=None, **hints):
        return db == "default"  # replicas follow the primary's schema through replication


class ReplicaReadsMiddleware:
    """Visitors' reads (GET and HEAD outside the admin) may be answered by a replica."""

    def __init__(self, get_response):
        self.get_response = get_response
        self._admin_prefix = None

    def __call__(self, request):
        if self._admin_prefix is None:
            self._admin_prefix = reverse("admin:index")
        if request.method in ("GET", "HEAD") and not request.path.startswith(self._admin_prefix):
            with replica_reads():
                return self.get_response(request)
        return self.get_response(request)
