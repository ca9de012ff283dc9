"""`manage.py embed_images` (similarity's command): compute what is missing or stale, with progress and a summary."""

import io

import pytest
from django.core.management import CommandError, call_command

from gallery.models import Image
from gallery.selectors import embedding_status_counts
from similarity.models import Embedding
from tests.conftest import unit_vector

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out, err = io.StringIO(), io.StringIO()
    call_command("embed_images", *args, stdout=out, stderr=err)
    return out.getvalue() + err.getvalue()


def test_missing_embeds_pending_and_failed_images_and_reports_failures(image_factory):
    waiting = image_factory(1)
    failed = image_factory(2, status=Image.Status.FAILED, embedding_error="old reason", embedding_attempts=5)
    broken = image_factory(3)
    broken.file.storage.delete(broken.file.name)
    done = image_factory(4, vector=unit_vector(1))

    output = run("--missing", "--batch-size", "2")

    assert "Done: 2 embedded, 1 failed" in output
    assert "The stored file is missing." in output
    for image in (waiting, failed):
        image.refresh_from_db()
        assert image.embedding_status == Image.Status.READY
        assert image.embeddings.get().model_identity == "resnet18/random-seed0"
    broken.refresh_from_db()
    assert broken.embedding_status == Image.Status.FAILED
    # The ready one was left alone: its hand-made vector is still there.
    assert list(done.embeddings.get().vector[:2]) == [1.0, 0.0]


def test_changing_the_weights_makes_embeddings_stale_until_recomputed(image_factory, settings):
    first = image_factory(1, vector=unit_vector(1, 0))
    second = image_factory(2, vector=unit_vector(0, 1))
    settings.EMBEDDING_RANDOM_SEED = 7
    counts = embedding_status_counts()
    assert counts["stale"] == 2 and counts["ready"] == 2

    output = run("--stale")

    assert "Done: 2 embedded, 0 failed" in output
    assert embedding_status_counts()["stale"] == 0
    identities = set(Embedding.objects.values_list("model_identity", flat=True))
    # The older vectors stay until they are dropped: the site may still be serving them.
    assert identities == {"resnet18/random-seed0", "resnet18/random-seed7"}
    assert first.embeddings.count() == second.embeddings.count() == 2


def test_nothing_to_do_says_so(image_factory):
    image_factory(1, vector=unit_vector(1))
    assert "Nothing to do" in run("--missing")


def test_missing_weights_file_is_a_clear_command_error(image_factory, settings, tmp_path):
    image = image_factory(1)
    settings.EMBEDDING_WEIGHTS = str(tmp_path / "resnet18.pth")
    with pytest.raises(CommandError, match="EMBEDDING_WEIGHTS names a weights file that does not exist"):
        run("--missing")
    image.refresh_from_db()
    assert image.embedding_status == Image.Status.PENDING
