"""Housekeeping only: files go once the deletion of their row is committed."""

from .storage import stored_file_delete_on_commit


def image_file_delete(sender, instance, **kwargs):
    stored_file_delete_on_commit(instance.file)


# An image's renditions go with it (CASCADE); each one's file follows here.
def rendition_file_delete(sender, instance, **kwargs):
    stored_file_delete_on_commit(instance.file)
