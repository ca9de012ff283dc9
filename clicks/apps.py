from django.apps import AppConfig


class ClicksConfig(AppConfig):
    """What visitors choose from similar-image lists, and the lists that learn from it."""

    name = "clicks"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from observability.registry import gauge_register

        from . import recording

        # How many recorded events wait for the flush: growing means the worker falls behind.
        gauge_register(
            "imagerec_click_events_buffered",
            documentation="Impressions and choices waiting in Redis for the flush to PostgreSQL.",
            label="state",
            collect=recording.buffered_event_counts,
        )
