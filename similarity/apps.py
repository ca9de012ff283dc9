from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from celery import signals
        from django.core import checks as django_checks

        from observability.registry import gauge_register, image_task_register, readiness_check_register

        from . import checks, health, pipeline, selectors, worker

        django_checks.register(checks.check_embedding_weights)
        # Only a worker sends these; web processes merely register the receivers.
        signals.worker_init.connect(worker.refuse_to_start_without_weights, dispatch_uid="similarity_worker_init")
        signals.worker_process_init.connect(worker.load_encoder, dispatch_uid="similarity_worker_process_init")

        # What /readyz, /metrics and the log lines learn from the embedding pipeline
        # (observability imports no app).
        readiness_check_register("backlog", health.backlog_check, reads_through="database")
        gauge_register(
            "imagerec_images",
            documentation="Images by embedding status.",
            label="status",
            collect=selectors.embedding_status_counts,
        )
        image_task_register(pipeline.EMBED_TASK)
