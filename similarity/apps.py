from django.apps import AppConfig


class SimilarityConfig(AppConfig):
    name = "similarity"
    default_auto_field = "django.db.models.BigAutoField"
