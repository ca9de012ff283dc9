from django.apps import AppConfig


class GalleryConfig(AppConfig):
    name = "gallery"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from django.conf import settings
        from django.core.signals import setting_changed
        from django.db.models.signals import post_delete

        from imaging import configure_pillow
        from observability.registry import image_task_register
        from similarity.signals import images_embedded

        from . import invalidation, pipeline, signals, storage
        from .models import Image, Rendition

        # Once per process; every decode also checks the limit itself (imaging.decoding).
        configure_pillow(max_pixels=settings.IMAGE_MAX_PIXELS)
        post_delete.connect(signals.image_file_delete, sender=Image, dispatch_uid="gallery_image_delete_file")
        post_delete.connect(signals.rendition_file_delete, sender=Rendition, dispatch_uid="gallery_rendition_delete_file")
        # Every change a public page shows drops the cached pages (one module says which).
        invalidation.receivers_connect()
        setting_changed.connect(storage.renditions_storage_reset, dispatch_uid="gallery_renditions_storage_reset")
        # New vectors, batch by batch on the worker: the gallery's near-duplicate flags follow.
        images_embedded.connect(signals.near_duplicates_on_embedded, dispatch_uid="gallery_near_duplicates")

        # What the log lines learn from the gallery (observability imports no app); the
        # embedding backlog and counts are similarity's to register.
        image_task_register(pipeline.RENDITIONS_TASK)
