from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from celery.signals import worker_init

        from . import checks

        # Only a worker sends worker_init; web processes merely register the receiver.
        worker_init.connect(checks.refuse_to_start_without_weights, dispatch_uid="similarity_weights_check")
