from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from celery import signals
        from django.core import checks as django_checks

        from . import checks, worker

        django_checks.register(checks.check_embedding_weights)
        # Only a worker sends these; web processes merely register the receivers.
        signals.worker_init.connect(worker.refuse_to_start_without_weights, dispatch_uid="similarity_worker_init")
        signals.worker_process_init.connect(worker.load_encoder, dispatch_uid="similarity_worker_process_init")
