"""The network and its weights: reproducible vectors, and weights problems explained."""

from __future__ import annotations

import hashlib
import os
import urllib.error

import numpy as np
import pytest
import torch
import torchvision.models._api
from django.conf import settings
from PIL import Image
from torchvision.models import resnet18, resnet50

from imaging import synthetic_photo
from similarity.encoders import base as encoder_base
from similarity.encoders.registry import get_encoder
from similarity.encoders.resnet18 import ResNet18Encoder, build_network
from similarity.weights import WeightsUnavailable, model_identity


def picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    # Coarse random blocks scaled up: structure at the scales a network looks at.
    blocks = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
    return Image.fromarray(blocks).resize((320, 240), Image.Resampling.BILINEAR)


@pytest.fixture(scope="module")
def batch() -> torch.Tensor:
    transform = get_encoder().transform
    return torch.stack([transform(picture(seed)) for seed in range(2)])


def features(network: torch.nn.Module, batch: torch.Tensor) -> torch.Tensor:
    with torch.inference_mode():
        return network(batch.contiguous(memory_format=torch.channels_last))


@pytest.fixture(scope="module")
def configured_features(batch) -> torch.Tensor:
    """The process's encoder: random weights under the test settings (each build takes seconds)."""
    assert settings.EMBEDDING_WEIGHTS == "random"
    return features(get_encoder().network, batch)


# --- Embeddings -------------------------------------------------------------------------


def test_embed_gives_one_unit_length_512_float_vector_per_picture():
    vectors = get_encoder().embed([picture(0), picture(1), picture(2)])

    assert vectors.shape == (3, 512)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert np.dot(vectors[0], vectors[1]) < 1 - 1e-4  # different pictures, different vectors


def test_embed_of_nothing_is_an_empty_batch():
    assert get_encoder().embed([]).shape == (0, 512)


def test_a_pictures_vector_does_not_depend_on_the_rest_of_its_batch():
    encoder = get_encoder()

    alone = encoder.embed([picture(0)])
    in_a_batch = encoder.embed([picture(5), picture(0), picture(6)])

    np.testing.assert_allclose(in_a_batch[1], alone[0], atol=1e-5)


def test_same_seed_gives_the_same_network_and_another_seed_a_different_one(batch, configured_features):
    seed = settings.EMBEDDING_RANDOM_SEED

    again = features(build_network("random", seed), batch)
    other = features(build_network("random", seed + 1), batch)

    torch.testing.assert_close(again, configured_features, rtol=0, atol=0)
    assert (other - configured_features).abs().max() > 1e-2


# --- Weights files ----------------------------------------------------------------------


def test_saved_state_dict_loads_back_to_the_same_network(tmp_path, batch, configured_features):
    path = tmp_path / "resnet18.pth"
    torch.save(get_encoder().network.state_dict(), path)

    # The seed argument is irrelevant once weights come from a file.
    loaded = features(build_network(str(path), settings.EMBEDDING_RANDOM_SEED + 7), batch)

    torch.testing.assert_close(loaded, configured_features)
    assert model_identity(str(path)) == "resnet18/file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_fine_tuned_checkpoint_with_another_classifier_loads(tmp_path, batch):
    # A ResNet18 trained on ten classes of one's own: only the discarded classifier differs.
    torch.manual_seed(7)
    network = resnet18(num_classes=10)
    path = tmp_path / "fine-tuned.pth"
    torch.save({"epoch": 3, "state_dict": network.state_dict()}, path)

    loaded = features(build_network(str(path), 0), batch)

    network.fc = torch.nn.Identity()
    network.eval()
    torch.testing.assert_close(loaded, features(network, batch))


def test_identity_follows_the_file_contents(tmp_path):
    path = tmp_path / "weights.pth"
    torch.manual_seed(3)
    torch.save(resnet18().state_dict(), path)
    before = model_identity(str(path))

    torch.manual_seed(4)
    torch.save(resnet18().state_dict(), path)
    stat = path.stat()
    # A person replaces a file seconds later, not within the file system's clock tick.
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))

    assert model_identity(str(path)) != before
    assert model_identity(str(path)) == "resnet18/file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


def test_identity_follows_the_configured_seed(settings):
    settings.EMBEDDING_WEIGHTS = "random"
    settings.EMBEDDING_RANDOM_SEED = 7

    assert model_identity() == "resnet18/random-seed7"
    assert model_identity(seed=8) != model_identity()


def test_missing_weights_file_says_which_setting_to_fix(tmp_path):
    path = str(tmp_path / "nowhere.pth")

    with pytest.raises(WeightsUnavailable, match="EMBEDDING_WEIGHTS") as identity_error:
        model_identity(path)
    with pytest.raises(WeightsUnavailable, match="EMBEDDING_WEIGHTS") as build_error:
        build_network(path, 0)

    assert path in str(identity_error.value)
    assert path in str(build_error.value)


def garbage(path):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 10_000, dtype=np.uint8).tobytes())


def text(path):
    path.write_text("not weights\n")


def a_tensor(path):
    torch.save(torch.zeros(3), path)


def another_architecture(path):
    torch.save(resnet50().state_dict(), path)


def another_naming(path):
    # Saved from nn.DataParallel: every key carries a "module." prefix.
    torch.save({f"module.{key}": value for key, value in resnet18().state_dict().items()}, path)


@pytest.mark.parametrize("write", [garbage, text, a_tensor, another_architecture, another_naming])
def test_unusable_weights_file_is_explained(tmp_path, write):
    path = tmp_path / "weights.pth"
    write(path)

    with pytest.raises(WeightsUnavailable) as raised:
        build_network(str(path), 0)

    assert str(path) in str(raised.value)


def test_unavailable_imagenet_weights_explain_every_way_out(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty cache

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(torchvision.models._api, "load_state_dict_from_url", offline)

    with pytest.raises(WeightsUnavailable) as raised:
        build_network("imagenet", 0)

    message = str(raised.value)
    assert str(tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth") in message
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in message
    assert "EMBEDDING_WEIGHTS=random" in message


def test_a_weights_file_replaced_in_place_gives_a_new_encoder_and_new_vectors(tmp_path, settings):
    path = tmp_path / "weights.pth"
    settings.EMBEDDING_WEIGHTS = str(path)
    torch.manual_seed(3)
    torch.save(resnet18().state_dict(), path)
    first = get_encoder()

    torch.manual_seed(4)
    torch.save(resnet18().state_dict(), path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
    second = get_encoder()

    assert isinstance(second, ResNet18Encoder) and second is not first
    assert second.identity == model_identity() != first.identity
    vectors = [encoder.embed([picture(0)])[0] for encoder in (first, second)]
    assert np.dot(*vectors) < 0.999  # really the new weights, not the cached network
    assert get_encoder() is second  # and loaded once


# --- Preparing pictures, and threads --------------------------------------------------


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


def test_threads_follow_the_cpu_share_and_the_pool_size(monkeypatch, settings):
    settings.EMBEDDING_TORCH_THREADS = 0
    monkeypatch.setattr(encoder_base, "cpu_share", lambda: 2)
    monkeypatch.setattr(encoder_base, "pool_processes", 2)
    assert encoder_base.torch_threads() == 1
    settings.EMBEDDING_TORCH_THREADS = 3
    assert encoder_base.torch_threads() == 3
