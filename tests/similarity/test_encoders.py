"""The encoder family: models found by name and identity, and a second model run end to end.

The second model is ``tests/similarity/histogram_encoder.py``, a fixed colour histogram: one
module, listed in EMBEDDING_ENCODER_MODULES, chosen with EMBEDDING_ENCODER. Its 512 floats fit
the vector column ResNet18's use, so it needs no migration.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from django.core.management import call_command
from django.urls import reverse
from PIL import Image as PILImage

from gallery.models import Image
from similarity.encoders.base import Encoder, WeightsUnavailable
from similarity.encoders.registry import RESNET18, family, family_of_identity, get_encoder
from similarity.models import Embedding
from similarity.serving import serving_identity
from similarity.weights import model_identity
from tests.conftest import encode, upload, wait_for

HISTOGRAM_MODULE = "tests.similarity.histogram_encoder"
HISTOGRAM = "histogram/rgb-8x8x8"


@pytest.fixture
def histogram_configured(settings):
    settings.EMBEDDING_ENCODER_MODULES = [HISTOGRAM_MODULE]
    settings.EMBEDDING_ENCODER = "histogram"
    return settings


def coloured(colour: tuple[int, int, int], seed: int, band: tuple[int, int, int] | None = None) -> bytes:
    """A JPEG of one colour with some grain, and a band of another across its lower third."""
    pixels = np.empty((360, 480, 3), dtype=np.int16)
    pixels[:] = colour
    if band:
        pixels[240:] = band
    grain = np.random.default_rng(seed).integers(-8, 9, pixels.shape)
    return encode(PILImage.fromarray(np.clip(pixels + grain, 0, 255).astype(np.uint8)))


# --- The registry -----------------------------------------------------------------------


def test_the_site_s_model_keeps_its_identities(settings):
    assert settings.EMBEDDING_ENCODER == "resnet18"
    assert model_identity("random", 0) == "resnet18/random-seed0"
    assert model_identity("imagenet") == "resnet18/imagenet1k-v1"
    assert family_of_identity("resnet18/imagenet1k-v1") is RESNET18
    assert isinstance(get_encoder(), Encoder) and get_encoder().dimension == RESNET18.dimension == 512


def test_a_model_from_another_module_is_found_by_name_and_by_identity(histogram_configured):
    assert model_identity() == HISTOGRAM
    assert family_of_identity(HISTOGRAM) is family("histogram")
    encoder = get_encoder()
    assert isinstance(encoder, Encoder) and encoder.identity == HISTOGRAM

    red, dark_red, blue = (PILImage.open(io.BytesIO(coloured(colour, seed))) for seed, colour in
                           enumerate([(220, 30, 30), (200, 20, 25), (30, 40, 220)]))
    vectors = encoder.embed([red, dark_red, blue])
    assert vectors.shape == (3, 512) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-5)
    assert vectors[0] @ vectors[1] > 0.5 > vectors[0] @ vectors[2]


def test_an_unknown_encoder_is_explained_and_the_check_warns(settings):
    settings.EMBEDDING_ENCODER = "clip"
    with pytest.raises(WeightsUnavailable, match="EMBEDDING_ENCODER_MODULES") as raised:
        model_identity()
    assert "EMBEDDING_ENCODER='clip' is not a known encoder (known: resnet18)" in str(raised.value)
    out = io.StringIO()
    call_command("check", stdout=out, stderr=out)
    assert "similarity.W001" in out.getvalue() and "EMBEDDING_ENCODER='clip'" in out.getvalue()


# --- End to end -------------------------------------------------------------------------


@pytest.mark.end_to_end
def test_a_second_model_embeds_uploads_in_a_worker_and_serves_the_pages(
    histogram_configured, start_worker, staff_client, client
):
    # The site serves ResNet18 until the switch; workers are restarted with the histogram.
    call_command("embedding_model_switch", "--identity", "resnet18/random-seed0", stdout=io.StringIO())
    worker = start_worker({"EMBEDDING_ENCODER": "histogram", "EMBEDDING_ENCODER_MODULES": HISTOGRAM_MODULE})

    pictures = {
        "red.jpg": coloured((220, 30, 30), 1),
        "red-with-white.jpg": coloured((205, 20, 25), 2, band=(240, 240, 240)),
        "green.jpg": coloured((30, 200, 40), 3),
        "blue.jpg": coloured((30, 40, 220), 4),
        "white-with-blue.jpg": coloured((240, 240, 240), 5, band=(30, 40, 220)),
    }
    files = [upload(name, content) for name, content in pictures.items()]
    response = staff_client.post(reverse("admin:gallery_image_add"), {"files": files, "caption": ""})
    assert response.status_code == 302
    wait_for(lambda: Image.objects.ready().count() == len(pictures), timeout=90, message="the uploads to be embedded")
    assert Embedding.objects.filter(model_identity=HISTOGRAM).count() == len(pictures), worker.log()
    assert "Loaded resnet18" not in worker.log()  # no network: ResNet18 was never built in that worker

    # Every image has the histogram's vector: the switch goes through.
    out = io.StringIO()
    call_command("embedding_model_switch", stdout=out)
    assert f"now serves {HISTOGRAM}" in out.getvalue()
    assert serving_identity() == HISTOGRAM

    by_name = {image.original_name: image for image in Image.objects.all()}
    page = client.get(reverse("gallery:image-detail", args=[by_name["red.jpg"].pk]))
    similar = [(item.image.original_name, round(item.similarity, 3)) for item in page.context["similar_images"]]
    assert similar[0][0] == "red-with-white.jpg", similar
    assert similar[0][1] > 0.5 > similar[1][1], similar
    page = client.get(reverse("gallery:image-detail", args=[by_name["blue.jpg"].pk]))
    assert page.context["similar_images"][0].image.original_name == "white-with-blue.jpg"
