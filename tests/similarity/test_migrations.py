"""Upgrading a running site: statuses move from the image's columns to a row per (image, model).

A database at the previous schema (both apps' migrations before the move), filled with rows
of the old shape, is migrated forward; every image keeps its status, error, attempts and
vectors.
"""

import numpy as np
import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.utils import timezone

CURRENT, OLD = "resnet18/random-seed0", "resnet18/random-seed7"  # the test settings' model, and an older one
BEFORE = [("gallery", "0004_renditions_storage"), ("similarity", "0003_serving_model")]
AFTER = [("gallery", "0005_embedding_status_moved_to_similarity"), ("similarity", "0004_embedding_jobs")]


def migrate(targets):
    """The database to ``targets``; returns the models as they are there."""
    executor = MigrationExecutor(connection)
    executor.migrate(targets)
    executor.loader.build_graph()
    return executor.loader.project_state(targets).apps


@pytest.fixture
def previous_schema(transactional_db):
    """The database at the previous schema for the test, and at the latest again after it."""
    yield migrate(BEFORE)
    executor = MigrationExecutor(connection)
    migrate(executor.loader.graph.leaf_nodes())


def vector(*components: float) -> list[float]:
    values = np.zeros(512, dtype=np.float32)
    values[: len(components)] = components
    return list(values / np.linalg.norm(values))


def test_every_image_keeps_its_status_and_vectors(previous_schema):
    apps = previous_schema
    Image, Embedding = apps.get_model("gallery", "Image"), apps.get_model("similarity", "Embedding")
    apps.get_model("similarity", "ServingModel").objects.create(identity=OLD)  # an upgrade under way
    changed = timezone.now() - timezone.timedelta(minutes=3)

    def image(name: str, status: str, **fields):
        return Image.objects.create(
            file=f"images/{name}.jpg", original_name=f"{name}.jpg", format="JPEG", width=64, height=48,
            file_size=1000, sha256=name.ljust(64, "0"), embedding_status=status, status_changed_at=changed, **fields,
        )

    waiting = image("waiting", "pending")
    busy = image("busy", "processing", embedding_attempts=2)
    broken = image("broken", "failed", embedding_error="The image cannot be decoded.", embedding_attempts=5)
    done = image("done", "ready", embedding_attempts=1)
    stale = image("stale", "ready", embedding_attempts=1)  # only the older model's vector yet
    recompute = image("recompute", "pending")  # asked for again, its old vector kept meanwhile
    vectors = {
        (done.pk, CURRENT): vector(1, 0), (done.pk, OLD): vector(0, 1), (stale.pk, OLD): vector(1, 1),
        (recompute.pk, CURRENT): vector(1, 2),
    }
    for (image_id, identity), values in vectors.items():
        Embedding.objects.create(image_id=image_id, model_identity=identity, vector=values)

    apps = migrate(AFTER)

    Image = apps.get_model("gallery", "Image")
    assert not {"embedding_status", "embedding_error", "embedding_attempts"} & {f.name for f in Image._meta.fields}
    jobs = {
        (job.image_id, job.model_identity): (job.status, job.error, job.attempts)
        for job in apps.get_model("similarity", "EmbeddingJob").objects.all()
    }
    assert jobs == {
        (waiting.pk, CURRENT): ("pending", "", 0),
        (busy.pk, CURRENT): ("processing", "", 2),
        (broken.pk, CURRENT): ("failed", "The image cannot be decoded.", 5),
        (done.pk, CURRENT): ("ready", "", 1),
        (done.pk, OLD): ("ready", "", 0),
        (stale.pk, OLD): ("ready", "", 0),
        (recompute.pk, CURRENT): ("pending", "", 0),
    }
    assert apps.get_model("similarity", "EmbeddingJob").objects.get(image_id=busy.pk).status_changed_at == changed
    stored = {
        (row.image_id, row.model_identity): list(np.asarray(row.vector, dtype=np.float32))
        for row in apps.get_model("similarity", "Embedding").objects.all()
    }
    assert stored.keys() == vectors.keys()
    for key, values in vectors.items():
        np.testing.assert_allclose(stored[key], values, atol=1e-3)


def test_what_the_site_reads_after_the_upgrade(previous_schema, settings):
    """The statuses the pages and the admin show are the ones the images had."""
    apps = previous_schema
    Image = apps.get_model("gallery", "Image")
    for name, status in (("a", "pending"), ("b", "ready"), ("c", "failed")):
        Image.objects.create(
            file=f"images/{name}.jpg", original_name=f"{name}.jpg", format="JPEG", width=64, height=48,
            file_size=1000, sha256=name.ljust(64, "0"), embedding_status=status,
        )
    b = Image.objects.get(original_name="b.jpg")
    apps.get_model("similarity", "Embedding").objects.create(image_id=b.pk, model_identity=CURRENT, vector=vector(1))

    migrate(MigrationExecutor(connection).loader.graph.leaf_nodes())  # as the site runs now

    from gallery.models import Image as SiteImage
    from similarity.selectors import embedding_status_counts

    assert {image.original_name: image.embedding_status for image in SiteImage.objects.all()} == {
        "a.jpg": "pending", "b.jpg": "ready", "c.jpg": "failed",
    }
    assert embedding_status_counts() == {"pending": 1, "processing": 0, "ready": 1, "failed": 1}
