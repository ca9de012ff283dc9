"""The worker's embedding service: claim, embed in pipelined batches, store, clean up what it claimed."""

import functools

import numpy as np
import pytest
import torch
from django.db import OperationalError

from gallery.models import Image
from imaging import load_rgb
from similarity import embedding, tasks
from similarity.embedding import Throughput, images_embed
from similarity.encoders.registry import get_encoder
from similarity.models import Embedding, EmbeddingJob

pytestmark = pytest.mark.django_db


def test_a_claim_of_several_batches_is_embedded_batch_by_batch(image_factory, settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    settings.EMBEDDING_CLAIM_BATCHES = 2
    images = [image_factory(seed) for seed in range(6)]
    broken = images[1]
    broken.file.storage.delete(broken.file.name)

    first = images_embed(image_ids=[images[0].pk])

    # One call claims two batches' worth; the broken file fails without stopping the rest.
    assert sorted(first.ready) == [images[0].pk, images[2].pk, images[3].pk]
    assert first.failed == {broken.pk: "The stored file is missing."}
    assert first.timings["forward"] > 0 and first.timings["claim"] > 0
    second = images_embed(image_ids=[images[1].pk])
    assert second.skipped == [broken.pk]
    assert sorted(second.ready) == [images[4].pk, images[5].pk]
    assert Image.objects.ready().count() == 5
    assert Image.objects.failed().get() == broken
    assert advisory_locks_held() == 0

    # Batching changes nothing: the stored vector is the picture's own (to the precision of
    # halfvec storage: float16 keeps about three significant digits).
    with images[3].file.open("rb") as handle:
        alone = get_encoder().embed([load_rgb(handle)])[0]
    np.testing.assert_allclose(np.asarray(images[3].embeddings.get().vector, dtype=np.float32), alone, atol=5e-4)


def test_embedding_in_this_process_goes_batch_by_batch_and_says_how_far_it_is(image_factory):
    images = [image_factory(seed) for seed in range(5)]
    broken = images[2]
    broken.file.storage.delete(broken.file.name)
    told = []

    result = embedding.images_embed_in_batches(
        image_ids=[image.pk for image in images], batch_size=2, progress=told.append
    )

    assert told == [2, 2, 1]
    assert sorted(result.ready) == sorted(image.pk for image in images if image != broken)
    assert result.failed == {broken.pk: "The stored file is missing."}
    assert Image.objects.ready().count() == 4 and Image.objects.failed().get() == broken
    assert advisory_locks_held() == 0


def test_a_poison_image_stops_after_the_attempt_limit(image_factory, settings):
    settings.EMBEDDING_MAX_ATTEMPTS = 3
    image = image_factory(1, embedding_attempts=3)
    result = images_embed(image_ids=[image.pk])
    image.refresh_from_db()
    assert image.embedding_status == Image.Status.FAILED
    assert image.embedding_error == "Gave up after 3 attempts."
    assert result.failed == {image.pk: "Gave up after 3 attempts."}


def test_a_second_delivery_of_the_same_task_does_nothing(image_factory):
    image = image_factory(1)
    first = images_embed(image_ids=[image.pk])
    stored = Embedding.objects.get(image=image)
    second = images_embed(image_ids=[image.pk])
    assert first.ready == [image.pk]
    assert second.ready == [] and second.skipped == [image.pk]
    assert Embedding.objects.get(image=image).created_at == stored.created_at


def advisory_locks_held() -> int:
    """Advisory locks this test's connection holds: each claim must end on every path."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid()")
        return cursor.fetchone()[0]


class GiveUp(Exception):
    """Stands in for Celery's SoftTimeLimitExceeded, which the task passes as ``give_up_on``."""


def interrupt_after_first_batch(error):
    real = embedding.embeddings_compute

    def compute(**kwargs):
        batches = real(**kwargs)
        yield next(batches)
        raise error

    return compute


@pytest.fixture
def one_claim_and_another_workers_image(image_factory, settings):
    """Six pending images (a task names two, the claim fills up to four) and one another worker holds."""
    settings.EMBEDDING_BATCH_SIZE = 2
    settings.EMBEDDING_CLAIM_BATCHES = 2
    pending = [image_factory(seed) for seed in range(6)]
    elsewhere = image_factory(9, status=Image.Status.PROCESSING)
    return pending, elsewhere


def test_giving_up_fails_exactly_what_this_call_claimed(one_claim_and_another_workers_image, monkeypatch):
    pending, elsewhere = one_claim_and_another_workers_image
    monkeypatch.setattr(embedding, "embeddings_compute", interrupt_after_first_batch(GiveUp()))

    result = images_embed(image_ids=[pending[0].pk, pending[1].pk], give_up_on=GiveUp, give_up_reason="Too slow.")

    statuses = dict(EmbeddingJob.objects.values_list("image_id", "status"))
    # The first batch was stored; the second batch of the claim (two images taken to fill
    # it) fails with the reason at once, instead of waiting minutes for the sweeper.
    assert sorted(result.ready) == [pending[0].pk, pending[1].pk]
    assert all(statuses[pk] == Image.Status.READY for pk in result.ready)
    assert set(result.failed) == {pending[2].pk, pending[3].pk}
    assert {image.embedding_error for image in Image.objects.failed()} == {"Too slow."}
    # What it never claimed is untouched: the rest of the queue, and another worker's image.
    assert statuses[pending[4].pk] == statuses[pending[5].pk] == Image.Status.PENDING
    assert statuses[elsewhere.pk] == Image.Status.PROCESSING
    assert advisory_locks_held() == 0


@pytest.mark.parametrize(
    ("error", "attempt_counts"),
    [
        (RuntimeError("a bug"), True),
        (OperationalError("connection lost"), False),
        (torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 MiB"), False),
        (torch.AcceleratorError("CUDA error: an illegal memory access was encountered"), False),
        (RuntimeError("CUDA error: unspecified launch failure"), False),
    ],
    ids=[
        "a fault in the code",
        "a lost database connection",
        "the gpu out of memory for one image",
        "a broken cuda context",
        "a cuda error torch reports plainly",
    ],
)
def test_an_interruption_hands_the_unfinished_claim_back(
    one_claim_and_another_workers_image, monkeypatch, error, attempt_counts
):
    pending, elsewhere = one_claim_and_another_workers_image
    monkeypatch.setattr(embedding, "embeddings_compute", interrupt_after_first_batch(error))

    with pytest.raises(type(error)):
        images_embed(image_ids=[pending[0].pk])

    unfinished = EmbeddingJob.objects.filter(image_id__in=[pending[2].pk, pending[3].pk])
    assert set(unfinished.values_list("status", flat=True)) == {Image.Status.PENDING}
    assert set(unfinished.values_list("attempts", flat=True)) == {1 if attempt_counts else 0}
    assert Image.objects.get(pk=elsewhere.pk).embedding_status == Image.Status.PROCESSING
    assert advisory_locks_held() == 0


def test_running_out_of_gpu_memory_costs_the_images_nothing(image_factory, settings, monkeypatch):
    from tests.similarity.test_compute import encoder_out_of_memory_once

    settings.EMBEDDING_BATCH_SIZE = 4
    images = [image_factory(seed) for seed in range(4)]
    encoder = encoder_out_of_memory_once()
    monkeypatch.setattr(embedding, "embeddings_compute", functools.partial(embedding.embeddings_compute, encoder=encoder))

    result = images_embed(image_ids=[image.pk for image in images])

    assert encoder.embed_pixels.sizes == [4, 2, 2]  # halved, then through
    assert sorted(result.ready) == sorted(image.pk for image in images) and not result.failed
    jobs = EmbeddingJob.objects.filter(image_id__in=result.ready)
    assert set(jobs.values_list("status", "attempts")) == {(Image.Status.READY, 1)}  # the one claim, nothing more
    assert advisory_locks_held() == 0


def test_a_broken_gpu_ends_the_worker_process_and_leaves_the_images_as_they_were(image_factory, settings, monkeypatch):
    images = [image_factory(seed) for seed in range(2)]
    broken = torch.AcceleratorError("CUDA error: an illegal memory access was encountered")
    monkeypatch.setattr(embedding, "embeddings_compute", interrupt_after_first_batch(broken))
    settings.EMBEDDING_BATCH_SIZE = 1

    # SystemExit in a task ends the pool process; Celery starts a fresh one, with a fresh
    # CUDA context, and hands it the message again (acks late, rejected on worker loss).
    with pytest.raises(SystemExit):
        tasks.images_embed.run([image.pk for image in images])

    jobs = dict(EmbeddingJob.objects.values_list("image_id", "status"))
    assert sorted(jobs.values()) == [Image.Status.PENDING, Image.Status.READY]
    assert set(EmbeddingJob.objects.filter(status=Image.Status.PENDING).values_list("attempts", flat=True)) == {0}
    assert advisory_locks_held() == 0


def test_a_worker_that_measured_a_fast_rate_claims_more(image_factory, settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    settings.EMBEDDING_CLAIM_BATCHES = 2
    settings.EMBEDDING_CLAIM_SECONDS = 5
    images = [image_factory(seed) for seed in range(12)]
    slow, fast = Throughput(), Throughput()
    slow.record(images=2, seconds=4.0)  # half an image a second: the floor, two batches
    fast.record(images=200, seconds=1.0)  # a thousand in five seconds: all twelve

    first = images_embed(image_ids=[images[0].pk], throughput=slow)
    second = images_embed(image_ids=[images[4].pk], throughput=fast)

    assert len(first.ready) == 4
    assert len(second.ready) == 8
    assert Image.objects.ready().count() == 12
    # And the rate is measured as the worker goes: each stored batch is a record.
    assert fast.rate() != 200.0


def test_a_claim_is_whole_batches_within_its_bounds(settings):
    settings.EMBEDDING_CLAIM_BATCHES, settings.EMBEDDING_CLAIM_SECONDS = 4, 5
    settings.EMBEDDING_SOFT_TIME_LIMIT = 300

    assert embedding.claim_size(batch_size=256, rate=None) == 1024  # nothing measured yet
    assert embedding.claim_size(batch_size=256, rate=100.0) == 1024  # slow: the floor
    assert embedding.claim_size(batch_size=256, rate=1300.0) == 6400  # 6,500 in five seconds, in batches of 256
    assert embedding.claim_size(batch_size=256, rate=1e6) == embedding.MAX_CLAIM_IMAGES
    settings.EMBEDDING_SOFT_TIME_LIMIT = 8  # a claim is never more than a quarter of the limit
    assert embedding.claim_size(batch_size=256, rate=1300.0) == 2560
