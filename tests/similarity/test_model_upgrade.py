"""A model upgrade without an outage: next vectors in the background, one switch, old vectors dropped after."""

from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse

from gallery.models import Image
from similarity.models import Embedding, EmbeddingJob
from similarity.serving import serving_identity

pytestmark = pytest.mark.django_db
CURRENT, NEXT = "resnet18/random-seed0", "resnet18/random-seed7"


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out, stderr=StringIO())
    return out.getvalue()


def neighbours(client, image) -> list[tuple[int, str]]:
    response = client.get(reverse("gallery:image-detail", args=[image.pk]))
    return [(item.image.pk, f"{item.similarity:.4f}") for item in response.context["similar_images"]]


def test_the_whole_upgrade_keeps_every_image_s_neighbours(client, image_factory, settings, staff_client):
    images = [image_factory(seed) for seed in range(5)]
    run("embed_images", "--missing")
    assert serving_identity() == CURRENT
    before = {image.pk: neighbours(client, image) for image in images}
    assert all(len(listed) == 4 for listed in before.values())

    # The next model is configured (workers restarted with it): pages keep the current one.
    settings.EMBEDDING_RANDOM_SEED = 7
    assert {image.pk: neighbours(client, image) for image in images} == before
    html = staff_client.get(reverse("admin:gallery_image_changelist")).content.decode()
    assert f"pages still serve <strong>{CURRENT}</strong>" in html and "5 ready image(s) still lack" in html

    # A switch before the next vectors exist is refused: visitors would lose their neighbours.
    with pytest.raises(CommandError, match="5 of 5 image"):
        run("embedding_model_switch")

    # In the background (here: the command, with its progress bar) the next vectors are made.
    run("embed_images", "--stale")
    assert Embedding.objects.filter(model_identity=NEXT).count() == 5
    assert {image.pk: neighbours(client, image) for image in images} == before  # still the current model
    assert {image.embedding_status for image in Image.objects.all()} == {Image.Status.READY}
    # Each model's progress is its own row: the current model's rows stayed ready throughout.
    assert set(EmbeddingJob.objects.values_list("model_identity", "status").distinct()) == {
        (CURRENT, EmbeddingJob.Status.READY), (NEXT, EmbeddingJob.Status.READY),
    }

    # One step moves the site: the same images, now ranked by the next model.
    assert f"now serves {NEXT}" in run("embedding_model_switch")
    after = {image.pk: neighbours(client, image) for image in images}
    assert after != before and all(len(listed) == 4 for listed in after.values())

    # The old vectors go last, by a separate command; the served model's cannot be dropped.
    with pytest.raises(CommandError, match="the model the site serves"):
        run("embeddings_drop", "--identity", NEXT)
    assert "Deleted 5" in run("embeddings_drop", "--identity", CURRENT)
    assert set(Embedding.objects.values_list("model_identity", flat=True)) == {NEXT}
    assert {image.pk: neighbours(client, image) for image in images} == after
