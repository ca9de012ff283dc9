import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


def image_upload_to(instance: "Image", filename: str) -> str:
    """A generated name: the visitor-supplied name never reaches the file system."""
    extension = (instance.format or "bin").lower()
    return f"images/{timezone.now():%Y/%m}/{uuid.uuid4().hex}.{extension}"


class ImageQuerySet(models.QuerySet):
    def newest_first(self):
        return self.order_by("-created_at", "-id")

    def pending(self):
        return self.filter(embedding_status=Image.Status.PENDING)

    def processing(self):
        return self.filter(embedding_status=Image.Status.PROCESSING)

    def ready(self):
        return self.filter(embedding_status=Image.Status.READY)

    def failed(self):
        return self.filter(embedding_status=Image.Status.FAILED)


class Image(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        PROCESSING = "processing", "processing"
        READY = "ready", "ready"
        FAILED = "failed", "failed"

    file = models.FileField(upload_to=image_upload_to, max_length=255)
    original_name = models.CharField(max_length=255, help_text="The uploaded file's name, for display only.")
    caption = models.CharField(max_length=300, blank=True)
    format = models.CharField(max_length=10, help_text="Decoded format, e.g. JPEG or PNG.")
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    file_size = models.PositiveBigIntegerField(help_text="Bytes.")
    sha256 = models.CharField(max_length=64, unique=True, help_text="Content hash; one image per content.")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    embedding_status = models.CharField(
        max_length=10, choices=Status.choices, default=Status.PENDING, db_index=True
    )
    embedding_error = models.TextField(blank=True, help_text="Why the embedding failed, when it did.")
    embedding_attempts = models.PositiveSmallIntegerField(default=0)
    status_changed_at = models.DateTimeField(default=timezone.now)

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at", "-id"], name="gallery_image_newest")]

    def __str__(self) -> str:
        return self.caption or self.original_name

    @property
    def title(self) -> str:
        return str(self)
