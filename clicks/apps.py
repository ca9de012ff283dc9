from django.apps import AppConfig


class ClicksConfig(AppConfig):
    """What visitors choose from similar-image lists, and the lists that learn from it."""

    name = "clicks"
    default_auto_field = "django.db.models.BigAutoField"
