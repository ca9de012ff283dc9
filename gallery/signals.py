"""Housekeeping only: files go once the deletion of their row is committed."""

import logging

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from .models import Image, Rendition

logger = logging.getLogger(__name__)


def _delete_file_after_commit(field_file) -> None:
    if not field_file or not field_file.name:
        return
    storage, name = field_file.storage, field_file.name

    def delete():
        try:
            storage.delete(name)
        except OSError:
            logger.warning("Could not remove %s after its row was deleted", name, exc_info=True)

    # After commit: a rolled-back delete must not lose the file.
    transaction.on_commit(delete)


@receiver(post_delete, sender=Image, dispatch_uid="gallery_image_delete_file")
def image_file_delete(sender, instance: Image, **kwargs):
    _delete_file_after_commit(instance.file)


# An image's renditions go with it (CASCADE); each one's file follows here.
@receiver(post_delete, sender=Rendition, dispatch_uid="gallery_rendition_delete_file")
def rendition_file_delete(sender, instance: Rendition, **kwargs):
    _delete_file_after_commit(instance.file)
