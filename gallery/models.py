import os
import uuid
from dataclasses import dataclass, replace
from functools import cached_property

from django.conf import settings
from django.db import models
from django.utils import timezone

from similarity.models import EmbeddingJob

from .storage import renditions_storage

# Widths of the display renditions: the whole picture, re-encoded as JPEG, camera metadata
# left behind. An image's own page and the gallery's enlarged view show up to 640 CSS
# pixels wide: 1280 for dense screens (srcset lets the browser choose); the API lists these.
RENDITION_WIDTHS = (320, 640, 1280)

# Gallery cards show the picture cropped to a fixed 3:2 shape (static/css/site.css), from
# about 220 CSS pixels wide (four columns) to 480 (one column on a phone): 320 and 640
# pixels cover ordinary and dense screens. Cropped to that shape, no pixel sent is hidden
# by the card; AVIF is about half the JPEG's bytes, WebP about two thirds, and a browser
# takes the first of these formats it can show (<picture>), so they are listed best first.
CARD_WIDTHS = (320, 640)
CARD_ASPECT_RATIO = (3, 2)
CARD_FORMATS = ("avif", "webp", "jpeg")

# The largest box an image's own page gives its picture, in CSS pixels (40rem by 28rem), and
# the page's margins either side (main's padding, 1rem each; static/css/site.css): the page
# sizes the picture before it loads, so nothing moves.
PAGE_PICTURE_BOX = (640, 448)
PAGE_MARGIN = 32


@dataclass(frozen=True)
class RenditionSpec:
    """One derived file every image gets: its kind, the width asked for and its format."""

    kind: str
    width: int
    format: str

    @property
    def label(self) -> str:
        """Its part of the file's name: ``1280`` for a display rendition, ``card640`` for a card's."""
        return f"{self.width}" if self.kind == "display" else f"{self.kind}{self.width}"


RENDITION_SPECS = (
    *(RenditionSpec("display", width, "jpeg") for width in RENDITION_WIDTHS),
    *(RenditionSpec("card", width, image_format) for width in CARD_WIDTHS for image_format in CARD_FORMATS),
)


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
        """Images missing at least one of the renditions (``RENDITION_SPECS``): new kinds included,
        so the sweeper has older images' made too."""
        missing = models.Q()
        for spec in RENDITION_SPECS:
            made = Rendition.objects.filter(
                image=models.OuterRef("pk"), kind=spec.kind, spec=spec.width, format=spec.format
            )
            missing |= ~models.Exists(made)
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
class PictureSource:
    """A <source> of a <picture>: a format (MIME type) and its files by width."""

    type: str
    srcset: str


@dataclass(frozen=True)
class Thumbnail:
    """What an <img> needs: a source, a srcset for dense screens, and the intrinsic size;
    for a <picture>, the better formats to offer first."""

    src: str
    width: int
    height: int
    srcset: str = ""
    sources: tuple[PictureSource, ...] = ()
    sizes: str = ""

    def fitted(self, *, max_width: int, max_height: int, margin: int) -> "Thumbnail":
        """The same picture sized (in CSS pixels) to fit the box, scaled down, never up.

        Given as the <img>'s width and height, this is the size the page keeps for it before
        it loads, and never more pixels than the picture has; ``sizes`` says so to the
        browser: that width, or the viewport's less ``margin`` where the viewport is narrower.
        """
        scale = min(1, max_width / self.width, max_height / self.height)
        width, height = max(1, round(self.width * scale)), max(1, round(self.height * scale))
        sizes = f"(max-width: {width + margin}px) calc(100vw - {margin}px), {width}px"
        return replace(self, width=width, height=height, sizes=sizes)


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
    def _renditions_by_kind(self) -> dict[tuple[str, str], list[tuple[int, int, str]]]:
        """(kind, format) -> (width, height, url) of each distinct size, smallest first.

        Reads ``renditions.all()``, so prefetch them (``with_renditions()``) when showing many.
        """
        by_kind: dict[tuple[str, str], dict[int, tuple[int, int, str]]] = {}
        for rendition in sorted(self.renditions.all(), key=lambda rendition: rendition.spec):
            sizes = by_kind.setdefault((rendition.kind, rendition.format), {})
            sizes.setdefault(rendition.width, (rendition.width, rendition.height, rendition.file.url))
        return {key: sorted(sizes.values()) for key, sizes in by_kind.items()}

    @property
    def _renditions_by_width(self) -> list[tuple[int, int, str]]:
        """The display renditions (the whole picture, JPEG), smallest first."""
        return self._renditions_by_kind.get(("display", "jpeg"), [])

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

    @property
    def page_picture(self) -> Thumbnail:
        """``picture`` sized for its page's box (``PAGE_PICTURE_BOX``), never beyond its own pixels."""
        width, height = PAGE_PICTURE_BOX
        return self.picture.fitted(max_width=width, max_height=height, margin=PAGE_MARGIN)

    @property
    def card_picture(self) -> Thumbnail:
        """For gallery cards: the picture cropped to the card's shape, AVIF and WebP offered
        before the JPEG. An image whose card renditions are not made yet (older images, until
        the sweeper has them made) shows ``thumbnail``, cropped by the browser."""
        jpeg = self._renditions_by_kind.get(("card", "jpeg"))
        if not jpeg:
            return self.thumbnail
        width, height, url = jpeg[0]
        sources = tuple(
            PictureSource(type=f"image/{image_format}", srcset=_srcset(self._renditions_by_kind[("card", image_format)]))
            for image_format in CARD_FORMATS
            if image_format != "jpeg" and ("card", image_format) in self._renditions_by_kind
        )
        return Thumbnail(src=url, width=width, height=height, srcset=_srcset(jpeg), sources=sources)

    def _rendition_offered(self, index: int) -> Thumbnail:
        """The rendition at ``index`` (by width) as src, every rendition in srcset."""
        sizes = self._renditions_by_width
        if not sizes:
            return Thumbnail(src="", width=self.width, height=self.height)
        width, height, url = sizes[index]
        return Thumbnail(src=url, width=width, height=height, srcset=_srcset(sizes))


def _srcset(sizes: list[tuple[int, int, str]]) -> str:
    return ", ".join(f"{url} {width}w" for width, _, url in sizes)


def rendition_upload_to(instance: "Rendition", filename: str) -> str:
    """Named after the original's generated name, so the two are easy to match on disk, and
    ending in the name it is saved under (``renditions_create`` gives the content's hash):
    renditions are cached for good, so a name never stands for other bytes, even when one
    is made again."""
    stem = os.path.splitext(os.path.basename(instance.image.file.name))[0] or uuid.uuid4().hex
    return f"renditions/{timezone.now():%Y/%m}/{stem}-{instance.label}-{filename}"


class Rendition(models.Model):
    """A smaller, re-encoded copy of an image for pages (EXIF, GPS included, left behind)."""

    class Kind(models.TextChoices):
        DISPLAY = "display", "the whole picture"
        CARD = "card", "cropped to a gallery card's shape"

    class Format(models.TextChoices):
        JPEG = "jpeg", "JPEG"
        WEBP = "webp", "WebP"
        AVIF = "avif", "AVIF"

    image = models.ForeignKey(Image, on_delete=models.CASCADE, related_name="renditions")
    # Database defaults as well: rows written before these kinds existed, and by raw SQL, are
    # display JPEGs.
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.DISPLAY, db_default=Kind.DISPLAY)
    spec = models.PositiveSmallIntegerField(help_text="The width asked for, in pixels.")
    format = models.CharField(max_length=5, choices=Format.choices, default=Format.JPEG, db_default=Format.JPEG)
    # The public storage: pages link here. Originals stay in the private default storage.
    file = models.FileField(upload_to=rendition_upload_to, storage=renditions_storage, max_length=255)
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()

    class Meta:
        constraints = [
            # A redelivered or concurrent task cannot add a second copy.
            models.UniqueConstraint(fields=["image", "kind", "spec", "format"], name="gallery_rendition_unique_per_spec"),
        ]

    def __str__(self) -> str:
        return f"{self.spec}px {self.kind} {self.get_format_display()} rendition of image {self.image_id}"

    @property
    def label(self) -> str:
        return RenditionSpec(self.kind, self.spec, self.format).label


def archive_upload_to(instance: "ArchiveUpload", filename: str) -> str:
    """A generated name, like an original's: the archive's own name is only ever shown."""
    return f"archives/{timezone.now():%Y/%m}/{uuid.uuid4().hex}.zip"


class ArchiveUpload(models.Model):
    """A zip archive sent to the upload API, kept until a worker has added its images.

    The request only stores the file (in the private default storage, as originals are: its
    pictures keep their camera metadata) and queues ``gallery.archive_upload_expand``. The
    worker adds each member as an upload of its own and counts what became of it in the same
    transaction as the member's image, so the counts are the page's progress and a run that
    is killed is resumed where it stopped, nothing lost or counted twice. The file is
    deleted once the archive is done or failed.
    """

    class State(models.TextChoices):
        QUEUED = "queued", "queued"
        EXPANDING = "expanding", "expanding"
        DONE = "done", "done"
        FAILED = "failed", "failed"

    # What the status keeps of the refused members, in the archive's order: a page's worth.
    REFUSALS_KEPT = 50

    # Blank once the archive is finished and its file deleted.
    file = models.FileField(upload_to=archive_upload_to, max_length=255, blank=True)
    name = models.CharField(max_length=255, help_text="The uploaded archive's path or name, for display only.")
    # Given to every member, as the admin's form gives them to every file of an upload.
    caption = models.CharField(max_length=300, blank=True)
    tag_names = models.JSONField(default=list, blank=True)
    folder_tags = models.BooleanField(default=False, help_text="Each folder name of a member's path becomes a tag.")
    state = models.CharField(max_length=10, choices=State.choices, default=State.QUEUED)
    members_total = models.PositiveIntegerField(default=0, help_text="Known once the archive is opened.")
    members_done = models.PositiveIntegerField(default=0)
    added = models.PositiveIntegerField(default=0)
    duplicates = models.PositiveIntegerField(default=0)
    refused = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True, help_text="Why the whole archive was refused.")
    refusals = models.JSONField(default=list, blank=True, help_text="The first refused members: name and reason.")
    uploaded_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(auto_now=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)
