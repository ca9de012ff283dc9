"""Housekeeping only: a deleted image's file goes once the deletion is committed."""

from django.db import transaction
from django.db.models.signals import post_delete
from django.dispatch import receiver

from .models import Image


@receiver(post_delete, sender=Image, dispatch_uid="gallery_image_delete_file")
def image_file_delete(sender, instance: Image, **kwargs):
    if not instance.file:
        return
    storage, name = instance.file.storage, instance.file.name
    # After commit: a rolled-back delete must not lose the file.
    transaction.on_commit(lambda: storage.delete(name))
