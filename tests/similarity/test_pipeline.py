"""The worker's embedding pipeline: preparation as the weights expect, batches, threads."""

import numpy as np
import pytest
import torch

from gallery.models import Image
from similarity import encoder as encoder_module
from similarity import services
from similarity.encoder import get_encoder
from similarity.imaging import load_rgb, synthetic_photo


@pytest.mark.parametrize("size", [(1500, 1000), (1000, 1500), (640, 640), (257, 1000), (513, 777), (320, 240), (225, 300)])
def test_prepared_input_is_the_weights_own_transform(size):
    encoder = get_encoder()
    picture = synthetic_photo(7, size)

    fast = encoder.preprocess(picture)
    reference = encoder.transform(picture)

    assert fast.shape == reference.shape == (3, 224, 224)
    # The same pixels, but for rounding: one grey level here and there, at most.
    one_level = 1 / 255 / min(encoder.transform.std)
    assert (fast - reference).abs().max() <= one_level + 1e-5
    assert (fast - reference).abs().mean() < one_level / 4


def test_prepared_batch_is_channels_last_and_embeds_like_the_reference():
    encoder = get_encoder()
    pictures = [synthetic_photo(seed, (800, 600)) for seed in range(3)]

    batch = encoder.pixels_to_tensor([encoder.pixels(picture) for picture in pictures])
    assert batch.is_contiguous(memory_format=torch.channels_last)

    vectors = encoder.embed(pictures)
    reference = encoder.embed_tensors(torch.stack([encoder.transform(picture) for picture in pictures]))
    np.testing.assert_allclose(vectors, reference, atol=1e-4)


@pytest.mark.django_db
def test_a_claim_of_several_batches_is_embedded_batch_by_batch(image_factory, settings):
    settings.EMBEDDING_BATCH_SIZE = 2
    settings.EMBEDDING_CLAIM_BATCHES = 2
    images = [image_factory(seed) for seed in range(6)]
    broken = images[1]
    broken.file.storage.delete(broken.file.name)

    first = services.embeddings_compute(image_ids=[images[0].pk])

    # One task claims two batches' worth; the broken file fails without stopping the rest.
    assert sorted(first.ready) == [images[0].pk, images[2].pk, images[3].pk]
    assert first.failed == {broken.pk: "The stored file is missing."}
    assert set(first.timings) >= {"claim", "decode", "forward", "store", "decode_cpu"}
    second = services.embeddings_compute(image_ids=[images[1].pk])
    assert second.skipped == [broken.pk]
    assert sorted(second.ready) == [images[4].pk, images[5].pk]
    assert Image.objects.ready().count() == 5
    assert Image.objects.failed().get() == broken

    # Batching changes nothing: the stored vector is the picture's own (to the precision of
    # halfvec storage: float16 keeps about three significant digits).
    with images[3].file.open("rb") as handle:
        alone = get_encoder().embed([load_rgb(handle)])[0]
    np.testing.assert_allclose(np.asarray(images[3].embeddings.get().vector, dtype=np.float32), alone, atol=5e-4)


def test_threads_follow_the_cpu_share_and_the_pool_size(monkeypatch, settings):
    settings.EMBEDDING_TORCH_THREADS = 0
    monkeypatch.setattr(encoder_module.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    monkeypatch.setattr(encoder_module, "_cgroup_cpu_quota", lambda: None)
    assert encoder_module.cpu_share() == 4
    monkeypatch.setattr(encoder_module, "_cgroup_cpu_quota", lambda: 2.5)
    assert encoder_module.cpu_share() == 2  # a container's quota caps the affinity mask

    monkeypatch.setattr(encoder_module, "pool_processes", 2)
    assert encoder_module.torch_threads() == 1
    settings.EMBEDDING_TORCH_THREADS = 3
    assert encoder_module.torch_threads() == 3
