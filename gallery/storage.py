"""Where media files live, and removing them, now or once a deletion commits.

Originals use STORAGES["default"] (never public: they keep the camera's metadata);
renditions use STORAGES["renditions"], the storage pages link to. Either may be the file
system or an S3-compatible bucket (imagerec.settings.base.media_storages).
"""

import logging

from django.core.files.storage import storages
from django.db import transaction
from django.utils.functional import LazyObject, empty

logger = logging.getLogger(__name__)


class _RenditionsStorage(LazyObject):
    """STORAGES["renditions"], looked up on first use, as Django's default_storage is.

    A FileField calls its storage callable once, when models load; this keeps that from
    fixing the storage before settings are final (and lets tests switch STORAGES).
    """

    def _setup(self):
        self._wrapped = storages["renditions"]


_renditions_storage = _RenditionsStorage()


def renditions_storage():
    """Rendition.file's storage (a callable, so migrations record the name, not the backend)."""
    return _renditions_storage


def renditions_storage_reset(*, setting, **kwargs) -> None:
    """A changed STORAGES setting (tests) takes effect for renditions too; Django resets its own."""
    if setting == "STORAGES":
        _renditions_storage._wrapped = empty


def stored_file_delete(field_file) -> None:
    """Remove a file now (a write that failed); a missing file is not an error."""
    if not field_file or not field_file.name:
        return
    try:
        field_file.storage.delete(field_file.name)
    except Exception:  # the file system's OSError, or an object store's error or timeout
        logger.warning("Could not remove %s", field_file.name, exc_info=True)


def stored_file_delete_on_commit(field_file) -> None:
    """Remove a file once the current transaction commits: a rolled-back delete keeps it."""
    if not field_file or not field_file.name:
        return
    storage, name = field_file.storage, field_file.name

    def delete():
        try:
            storage.delete(name)
        except Exception:
            # The row is gone for good: an unreachable store leaves an orphaned file, logged,
            # never an error page for a delete that succeeded.
            logger.warning("Could not remove %s after its row was deleted", name, exc_info=True)

    transaction.on_commit(delete)
