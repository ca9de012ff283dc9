import os
import uuid
from dataclasses import dataclass
from functools import cached_property

from django.conf import settings
from django.db import models
from django.utils import timezone

from similarity.models import EmbeddingJob

from .storage import renditions_storage

# Widths of the derived pictures, the only files the public ever receives (re-encoded as
# JPEG, camera metadata left behind). A gallery card is about 300 CSS pixels wide: 320 for
# ordinary screens, 640 for dense ones; an image's own page shows up to 640 CSS pixels:
# 1280 for dense screens (srcset lets the browser choose).
RENDITION_WIDTHS = (320, 640, 1280)


def image_upload_to(instance: "Image", filename: str) -> str:
    """A generated name: the visitor-supplied name never reaches the file system."""
    extension = (instance.format or "bin").lower()
    return f"images/{timezone.now():%Y/%m}/{uuid.uuid4().hex}.{extension}"


class Tag(models.Model):
    """A word that groups images: visitors filter the gallery by it, and recommendations can keep to it."""

    name = models.CharField(max_length=60, unique=True)
    slug = models.SlugField(max_length=60, unique=True, allow_unicode=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class ImageQuerySet(models.QuerySet):
    def newest_first(self):
        return self.order_by("-created_at", "-id")

    # Embedding status is similarity's (a row per image and model); these read it there.

    def in_status(self, status: str):
        from similarity.selectors import embedding_status_filter

        return self.filter(embedding_status_filter(status))

    def pending(self):
        return self.in_status(Image.Status.PENDING)

    def processing(self):
        return self.in_status(Image.Status.PROCESSING)

    def ready(self):
        return self.in_status(Image.Status.READY)

    def failed(self):
        return self.in_status(Image.Status.FAILED)

    def with_renditions(self):
        """Thumbnails in one extra query, whatever the number of images."""
        return self.prefetch_related("renditions")

    def without_renditions(self):
        """Images missing at least one of the rendition widths."""
        missing = models.Q()
        for spec in RENDITION_WIDTHS:
            missing |= ~models.Exists(Rendition.objects.filter(image=models.OuterRef("pk"), spec=spec))
        return self.filter(missing)

    def tagged(self, tag: "Tag | None"):
        return self if tag is None else self.filter(tags=tag)

    def possible_duplicates(self):
        return self.filter(near_duplicate_of__isnull=False)

    # One vector per image and model identity (a unique constraint), so a join adds no rows.

    def with_embedding(self, identity: str | None = None):
        """Images with a vector from ``identity`` (default: the model workers embed with now)."""
        return self.filter(embeddings__model_identity=identity or _configured_identity())

    def without_embedding(self, identity: str | None = None):
        return self.exclude(embeddings__model_identity=identity or _configured_identity())

    def annotate_has_embedding(self):
        """``has_embedding``: a vector from the model the pages serve, read in the same query."""
        from similarity.models import Embedding
        from similarity.serving import serving_identity_expression

        vectors = Embedding.objects.filter(image=models.OuterRef("pk"), model_identity=serving_identity_expression())
        return self.annotate(has_embedding=models.Exists(vectors))

    def stale(self, identity: str | None = None):
        """Ready, but without a vector from ``identity`` (default: the configured model): to recompute."""
        return self.ready().without_embedding(identity)


def _configured_identity() -> str:
    from similarity.weights import model_identity

    return model_identity()


@dataclass(frozen=True)
class Thumbnail:
    """What an <img> needs: a source, a srcset for dense screens, and the intrinsic size."""

    src: str
    width: int
    height: int
    srcset: str = ""


class Image(models.Model):
    # The embedding's states, as similarity names them (the pages, API and admin show them).
    Status = EmbeddingJob.Status

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

    # Set once the embedding exists: the nearest neighbour, when it is nearly the same picture.
    near_duplicate_of = models.ForeignKey(
        "self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+",
        help_text="Another image this one looks almost exactly like (nearest neighbour).",
    )
    near_duplicate_similarity = models.FloatField(null=True, blank=True)
    tags = models.ManyToManyField(Tag, blank=True, related_name="images")

    objects = ImageQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["-created_at", "-id"], name="gallery_image_newest")]

    def __str__(self) -> str:
        return self.caption or self.original_name

    @property
    def title(self) -> str:
        return str(self)

    # Where its embedding stands, read from similarity (``similarity.selectors``): one query the
    # first time it is asked for, none for images loaded by
    # ``gallery.selectors.images_load_embedding_jobs``; ``refresh_from_db`` reads it afresh.

    @property
    def embedding_job(self) -> EmbeddingJob | None:
        if "_embedding_job" not in self.__dict__:
            from similarity.selectors import embedding_jobs_of

            self.__dict__["_embedding_job"] = embedding_jobs_of(image_ids=[self.pk]).get(self.pk)
        return self.__dict__["_embedding_job"]

    def refresh_from_db(self, *args, **kwargs) -> None:
        self.__dict__.pop("_embedding_job", None)
        super().refresh_from_db(*args, **kwargs)

    @property
    def embedding_status(self) -> str:
        job = self.embedding_job
        # No row yet: an image whose row is being written with it counts as waiting.
        return job.status if job else Image.Status.PENDING

    @property
    def embedding_error(self) -> str:
        job = self.embedding_job
        return job.error if job else ""

    @property
    def embedding_attempts(self) -> int:
        job = self.embedding_job
        return job.attempts if job else 0

    def get_embedding_status_display(self) -> str:
        return Image.Status(self.embedding_status).label

    @cached_property
    def _renditions_by_width(self) -> list[tuple[int, int, str]]:
        """(width, height, url) of each distinct rendition size, smallest first.

        Reads ``renditions.all()``, so prefetch them (``with_renditions()``) when showing many.
        """
        by_width = {}
        for rendition in sorted(self.renditions.all(), key=lambda rendition: rendition.spec):
            by_width.setdefault(rendition.width, (rendition.width, rendition.height, rendition.file.url))
        return sorted(by_width.values())

    @property
    def rendition_sizes(self) -> list[tuple[int, int, str]]:
        """(width, height, url) of each rendition size, smallest first: what the API lists."""
        return list(self._renditions_by_width)

    @property
    def thumbnail(self) -> Thumbnail:
        """For cards: the smallest rendition, the larger ones in srcset.

        Never the original: it may carry the camera's metadata (GPS included) and be in a
        format browsers cannot show (TIFF). Until the renditions exist, ``src`` is empty and
        pages show a placeholder of the picture's shape.
        """
        return self._rendition_offered(0)

    @property
    def picture(self) -> Thumbnail:
        """For the image's own page: the largest rendition, the smaller ones in srcset."""
        return self._rendition_offered(-1)

    def _rendition_offered(self, index: int) -> Thumbnail:
        """The rendition at ``index`` (by width) as src, every rendition in srcset."""
        sizes = self._renditions_by_width
        if not sizes:
            return Thumbnail(src="", width=self.width, height=self.height)
        width, height, url = sizes[index]
        return Thumbnail(src=url, width=width, height=height, srcset=", ".join(f"{u} {w}w" for w, _, u in sizes))


def rendition_upload_to(instance: "Rendition", filename: str) -> str:
    """Named after the original's generated name, so the two are easy to match on disk."""
    stem = os.path.splitext(os.path.basename(instance.image.file.name))[0] or uuid.uuid4().hex
    return f"renditions/{timezone.now():%Y/%m}/{stem}-{instance.spec}.jpg"


class Rendition(models.Model):
    """A smaller, re-encoded copy of an image for pages (EXIF, GPS included, left behind)."""

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="renditions")
    spec = models.PositiveSmallIntegerField(help_text="The width asked for, in pixels.")
    # The public storage: pages link here. Originals stay in the private default storage.
    file = models.FileField(upload_to=rendition_upload_to, storage=renditions_storage, max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()

    class Meta:
        constraints = [
            # A redelivered or concurrent task cannot add a second copy.
            models.UniqueConstraint(fields=["image", "spec"], name="gallery_rendition_unique_per_spec"),
        ]

    def __str__(self) -> str:
        return f"{self.spec}px rendition of image {self.image_id}"
