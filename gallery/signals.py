"""Housekeeping: files go once the deletion of their row is committed (cached pages: see
gallery/invalidation.py). And the gallery's answer to new vectors: near-duplicate flags."""

from .services import near_duplicates_mark
from .storage import stored_file_delete_on_commit


def image_file_delete(sender, instance, **kwargs):
    stored_file_delete_on_commit(instance.file)


# An image's renditions go with it (CASCADE); each one's file follows here.
def rendition_file_delete(sender, instance, **kwargs):
    stored_file_delete_on_commit(instance.file)


# similarity.signals.images_embedded: a batch's vectors are stored (on the worker).
def near_duplicates_on_embedded(sender, image_ids, identity=None, **kwargs):
    near_duplicates_mark(image_ids=image_ids, identity=identity)  # the vectors' own model
