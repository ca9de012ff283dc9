from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    name = "observability"
    verbose_name = "Health, metrics and logs"

    def ready(self):
        from celery import signals as celery_signals
        from django.core.signals import request_finished

        from . import context, signals

        request_finished.connect(context.request_id_clear, dispatch_uid="observability_request_id_clear")

        # Only Celery programs send these; web processes merely register the receivers.
        celery_signals.setup_logging.connect(signals.keep_django_logging, dispatch_uid="observability_logging")
        celery_signals.task_prerun.connect(signals.task_started, dispatch_uid="observability_task_started")
        celery_signals.task_postrun.connect(signals.task_finished, dispatch_uid="observability_task_finished")
        celery_signals.worker_ready.connect(signals.heartbeat_start, dispatch_uid="observability_heartbeat_start")
        celery_signals.worker_shutdown.connect(signals.heartbeat_stop, dispatch_uid="observability_heartbeat_stop")
