from django.db import models
from django.utils import timezone
from pgvector.django import HalfVectorField, HnswIndex

EMBEDDING_DIMENSIONS = 512


class EmbeddingQuerySet(models.QuerySet):
    def for_model(self, model_identity: str):
        return self.filter(model_identity=model_identity)


class Embedding(models.Model):
    """One image's ResNet18 feature vector, as produced by one model identity."""

    image = models.ForeignKey("gallery.Image", on_delete=models.CASCADE, related_name="embeddings")
    model_identity = models.CharField(
        max_length=100, help_text="Which network and weights made the vector, e.g. resnet18/imagenet1k-v1."
    )
    # Half precision: the HNSW index is half the size and builds faster, exact scans read
    # rows stored in line (1 KB instead of a 2 KB TOASTed value), and recall is unchanged
    # (docs/benchmarks.md). Scores shown to two decimals lose nothing.
    vector = HalfVectorField(dimensions=EMBEDDING_DIMENSIONS)
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    objects = EmbeddingQuerySet.as_manager()

    class Meta:
        constraints = [
            # A redelivered task finds its work done: one vector per image and model.
            models.UniqueConstraint(fields=["image", "model_identity"], name="similarity_embedding_unique_per_model"),
        ]
        indexes = [
            HnswIndex(
                name="similarity_embedding_hnsw",
                fields=["vector"],
                # Chosen by bench/: recall@10 >= 0.96 at a million images soonest.
                m=16,
                ef_construction=128,
                opclasses=["halfvec_cosine_ops"],
            ),
        ]

    def __str__(self) -> str:
        return f"{self.model_identity} embedding of image {self.image_id}"


class EmbeddingJobQuerySet(models.QuerySet):
    def for_model(self, model_identity: str):
        return self.filter(model_identity=model_identity)


class EmbeddingJob(models.Model):
    """Where one image's embedding by one model identity stands: one row per (image, model).

    Written only by ``similarity.lifecycle``. During an upgrade the next model's rows fill in
    while the current model's stay ready, so each model's progress is tracked on its own.
    """

    class Status(models.TextChoices):
        PENDING = "pending", "pending"
        PROCESSING = "processing", "processing"
        READY = "ready", "ready"
        FAILED = "failed", "failed"

    # By string, like Embedding's: this app never imports the gallery.
    image = models.ForeignKey("gallery.Image", on_delete=models.CASCADE, related_name="embedding_jobs")
    model_identity = models.CharField(max_length=100)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    error = models.TextField(blank=True, help_text="Why the embedding failed, when it did.")
    attempts = models.PositiveSmallIntegerField(default=0)
    status_changed_at = models.DateTimeField(default=timezone.now)

    objects = EmbeddingJobQuerySet.as_manager()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["image", "model_identity"], name="similarity_embeddingjob_unique_per_model"),
        ]
        indexes = [
            # The claim's and the sweeper's scan: one model's pending or processing rows, oldest first.
            models.Index(fields=["model_identity", "status", "status_changed_at"], name="similarity_job_queue"),
        ]

    def __str__(self) -> str:
        return f"{self.model_identity} embedding of image {self.image_id}: {self.status}"


class ServingModel(models.Model):
    """Which model identity the pages compare: one row, switched in one UPDATE.

    Without a row the pages serve the configured model (EMBEDDING_WEIGHTS). During an
    upgrade the workers already embed with the next model while this still names the
    current one, so the site keeps its neighbours until ``embedding_model_switch``.
    """

    identity = models.CharField(max_length=100, unique=True)
    switched_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.identity
