"""Admin upload -> broker -> a real Celery worker process -> pgvector -> recommendation pages."""

import io
import zipfile

import pytest
from django.urls import reverse
from PIL import Image as PILImage

from gallery.models import RENDITION_SPECS, Image, Rendition
from similarity.models import Embedding
from tests.conftest import encode, photo_like, upload, wait_for

pytestmark = [pytest.mark.end_to_end]


def all_ready(count):
    return lambda: Image.objects.ready().count() == count


def resized_recompressed(seed: int) -> bytes:
    """The same photo, scaled to 70% and saved again at a lower JPEG quality."""
    original = photo_like(seed, (480, 360))
    smaller = original.resize((336, 252), PILImage.Resampling.LANCZOS)
    return encode(smaller, "JPEG", quality=70)


def test_uploaded_images_are_embedded_by_a_worker_and_recommended(staff_client, worker):
    files = [upload(f"scene-{seed}.jpg", encode(photo_like(seed, (480, 360)))) for seed in range(6)]
    response = staff_client.post(reverse("admin:gallery_image_add"), {"files": files, "caption": ""})
    assert response.status_code == 302
    assert Image.objects.count() == 6
    wait_for(all_ready(6), timeout=90, message="six images to be embedded")
    assert Embedding.objects.filter(model_identity="resnet18/random-seed0").count() == 6

    # The copy arrives later, on its own, like a second upload would.
    copy = upload("scene-3-copy.jpg", resized_recompressed(3))
    staff_client.post(reverse("admin:gallery_image_add"), {"files": [copy]})
    copy_image = Image.objects.get(original_name="scene-3-copy.jpg")
    wait_for(all_ready(7), timeout=60, message="the copy to be embedded")

    original = Image.objects.get(original_name="scene-3.jpg")
    page = staff_client.get(reverse("gallery:image-detail", args=[copy_image.pk]))
    similar = page.context["similar_images"]
    assert similar[0].image == original, [(item.image.original_name, item.similarity) for item in similar]
    assert similar[0].similarity > similar[1].similarity
    html = page.content.decode()
    assert f">{similar[0].similarity:.2f}<" in html
    # The link counts the choice, then leads to the original's page.
    link = reverse("clicks:choice", args=[copy_image.pk, 1, page.context["comparison"], similar[0].variant, original.pk])
    assert f'href="{link}"' in html

    # And the copy shows up, with its score, on the original's own page.
    back = staff_client.get(reverse("gallery:image-detail", args=[original.pk])).context["similar_images"]
    assert back[0].image == copy_image


def test_an_image_whose_file_vanished_ends_failed_with_a_reason(staff_client, worker):
    staff_client.post(reverse("admin:gallery_image_add"), {"files": [upload("ok.jpg", encode(photo_like(1)))]})
    image = Image.objects.get()
    wait_for(all_ready(1), timeout=60, message="the image to be embedded")
    # Later the stored file disappears (a storage fault) and the image is recomputed.
    image.file.storage.delete(image.file.name)
    from similarity.pipeline import embeddings_request

    embeddings_request(image_ids=[image.pk])
    wait_for(lambda: Image.objects.get(pk=image.pk).embedding_status == Image.Status.FAILED, timeout=60)
    image.refresh_from_db()
    assert image.embedding_error == "The stored file is missing."
    page = staff_client.get(reverse("gallery:image-detail", args=[image.pk])).content.decode()
    assert "could not be processed" in page


def test_a_zip_and_a_resized_copy_get_thumbnails_and_the_copy_is_flagged(staff_client, worker):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for seed in (1, 6):
            archive.writestr(f"scenes/scene-{seed}.jpg", encode(photo_like(seed, (480, 360))))
    files = [
        upload("scenes.zip", buffer.getvalue(), "application/zip"),
        upload("scene-1-copy.jpg", resized_recompressed(1)),
    ]
    response = staff_client.post(reverse("admin:gallery_image_add"), {"files": files})
    assert [outcome.status for outcome in response.context["outcomes"]] == ["added"] * 3
    wait_for(all_ready(3), timeout=90, message="three images to be embedded")
    wait_for(lambda: Rendition.objects.count() == 3 * len(RENDITION_SPECS), timeout=30, message="thumbnails for three images")

    original, unrelated, copy = (
        Image.objects.get(original_name=name) for name in ("scene-1.jpg", "scene-6.jpg", "scene-1-copy.jpg")
    )
    assert copy.near_duplicate_of == original, copy.near_duplicate_similarity
    assert copy.near_duplicate_similarity > 0.98
    assert unrelated.near_duplicate_of is None
    html = staff_client.get(reverse("admin:gallery_image_changelist") + "?possible_duplicate=yes").content.decode()
    assert f"possible duplicate of <a href=\"{reverse('admin:gallery_image_change', args=[original.pk])}\">" in html
    assert "scene-6.jpg" not in html
