"""Housekeeping: files go once the deletion of their row is committed; cached lists go too.
And the gallery's answer to new vectors: near-duplicate flags."""

from similarity.cache import neighbours_cache_invalidate

from .services import near_duplicates_mark
from .storage import stored_file_delete_on_commit


def image_file_delete(sender, instance, **kwargs):
    stored_file_delete_on_commit(instance.file)
    neighbours_cache_invalidate()  # the image leaves every list it was in


def image_tags_changed(sender, action, **kwargs):
    if action in ("post_add", "post_remove", "post_clear"):
        neighbours_cache_invalidate()  # lists kept to a tag change with it


# An image's renditions go with it (CASCADE); each one's file follows here.
def rendition_file_delete(sender, instance, **kwargs):
    stored_file_delete_on_commit(instance.file)


# similarity.signals.images_embedded: a batch's vectors are stored (on the worker).
def near_duplicates_on_embedded(sender, image_ids, identity=None, **kwargs):
    near_duplicates_mark(image_ids=image_ids, identity=identity)  # the vectors' own model
