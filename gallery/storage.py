"""Removing stored files, now or once a deletion commits."""

import logging

from django.db import transaction

logger = logging.getLogger(__name__)


def stored_file_delete(field_file) -> None:
    """Remove a file now (a write that failed); a missing file is not an error."""
    if not field_file or not field_file.name:
        return
    try:
        field_file.storage.delete(field_file.name)
    except OSError:
        logger.warning("Could not remove %s", field_file.name, exc_info=True)


def stored_file_delete_on_commit(field_file) -> None:
    """Remove a file once the current transaction commits: a rolled-back delete keeps it."""
    if not field_file or not field_file.name:
        return
    storage, name = field_file.storage, field_file.name

    def delete():
        try:
            storage.delete(name)
        except OSError:
            logger.warning("Could not remove %s after its row was deleted", name, exc_info=True)

    transaction.on_commit(delete)
