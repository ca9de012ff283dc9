"""What an admin does: upload one or many images, see their state, and be told about bad files."""

import pytest
from django.urls import reverse

from gallery.models import Image, Tag
from gallery.renditions import renditions_create
from gallery.services import UNEXPECTED_ERROR
from pagecache.store import is_bump
from tests.conftest import encode, photo_like, upload

pytestmark = pytest.mark.django_db

ADD_URL = reverse("admin:gallery_image_add")
LIST_URL = reverse("admin:gallery_image_changelist")


def stored_files(settings):
    return {path for path in settings.MEDIA_ROOT.rglob("*") if path.is_file()}


def post_files(client, files, caption=""):
    return client.post(ADD_URL, {"files": files, "caption": caption})


def tasks(callbacks):
    """What a commit sends to the workers, leaving out the page cache's own bump."""
    return [callback for callback in callbacks if not is_bump(callback)]


def test_upload_one_image_stores_it_pending_and_queues_its_embedding(
    staff_client, make_upload, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_files(staff_client, [make_upload(1, name="Sunset_over-the.bay.jpg")], caption="")
    assert response.status_code == 302 and response["Location"] == LIST_URL
    image = Image.objects.get()
    assert image.original_name == "Sunset_over-the.bay.jpg"
    assert image.caption == "Sunset over the bay"
    assert (image.width, image.height, image.format) == (320, 240, "JPEG")
    assert image.embedding_status == Image.Status.PENDING
    assert image.uploaded_by == staff_client.user
    assert len(image.sha256) == 64 and image.file_size == image.file.size
    # Stored under a generated name, never the uploaded one.
    assert "Sunset" not in image.file.name and image.file.name.endswith(".jpeg")
    assert len(tasks(callbacks)) == 1  # the embedding task is published once the upload commits


def test_upload_many_at_once_with_a_caption(staff_client, make_upload):
    response = post_files(staff_client, [make_upload(seed) for seed in range(3)], caption="Harbour walk")
    assert response.status_code == 302
    assert Image.objects.count() == 3
    assert set(Image.objects.values_list("caption", flat=True)) == {"Harbour walk"}
    messages = [str(message) for message in response.wsgi_request._messages]
    assert sorted(messages) == [f"Added photo-{seed}.jpg as image {image.pk}." for seed, image in enumerate(Image.objects.order_by("pk"))]


def test_file_names_keep_their_case_in_messages(staff_client, make_upload):
    response = post_files(staff_client, [make_upload(1, name="iMG_0042.jpg")])
    page = staff_client.get(response.url).content.decode()
    assert "Added iMG_0042.jpg as image" in page  # the admin capitalises a message's first letter


BAD_FILES = {
    "empty": (b"", "The file is empty."),
    "text named .jpg": (b"this is not a picture, just words\n" * 20, "not an image that can be read"),
    "truncated JPEG": (encode(photo_like(5))[:1500], "damaged or incomplete"),
}


@pytest.mark.parametrize("kind", BAD_FILES)
def test_bad_file_is_listed_with_the_reason_and_nothing_is_stored(
    staff_client, kind, django_capture_on_commit_callbacks, settings
):
    content, expected = BAD_FILES[kind]
    files_before = stored_files(settings)
    with django_capture_on_commit_callbacks() as callbacks:
        response = post_files(staff_client, [upload("holiday.jpg", content)])
    assert response.status_code == 200
    (outcome,) = response.context["outcomes"]
    assert (outcome.name, outcome.status) == ("holiday.jpg", "refused") and expected in outcome.error
    html = response.content.decode()
    assert "0 added, 0 already in the gallery, 1 refused." in html and expected in html
    assert 'class="errorlist"' not in html  # a table of results, not a wall of form errors
    assert Image.objects.count() == 0
    assert tasks(callbacks) == []
    assert stored_files(settings) == files_before


def test_same_bytes_again_are_refused_naming_the_existing_image(staff_client, make_upload):
    post_files(staff_client, [make_upload(9, name="first.jpg")])
    original = Image.objects.get()
    response = post_files(staff_client, [make_upload(9, name="renamed-copy.jpg")])
    assert response.status_code == 200
    (outcome,) = response.context["outcomes"]
    assert outcome.status == "duplicate" and outcome.duplicate_of == original
    html = response.content.decode()
    assert f'duplicate of image <a href="{reverse("admin:gallery_image_change", args=[original.pk])}">' in html
    assert Image.objects.count() == 1


def test_a_mixed_upload_adds_the_good_files_and_reports_the_rest(staff_client, make_upload):
    post_files(staff_client, [make_upload(1)])
    first = Image.objects.get()
    response = post_files(staff_client, [make_upload(1), make_upload(2), upload("notes.jpg", b"plain text")])
    # A result page lists every file, since not all of them got in.
    assert response.status_code == 200
    assert response.templates[0].name == "admin/gallery/image/upload_result.html"
    assert Image.objects.count() == 2
    added = Image.objects.get(original_name="photo-2.jpg")
    rows = {outcome.name: outcome for outcome in response.context["outcomes"]}
    assert rows["photo-2.jpg"].status == "added" and rows["photo-2.jpg"].image == added
    assert rows["photo-1.jpg"].status == "duplicate" and rows["photo-1.jpg"].duplicate_of == first
    assert rows["notes.jpg"].status == "refused"
    html = response.content.decode()
    assert "1 added, 1 already in the gallery, 1 refused." in html
    assert reverse("admin:gallery_image_change", args=[added.pk]) in html
    assert f'duplicate of image <a href="{reverse("admin:gallery_image_change", args=[first.pk])}">{first.pk}</a>' in html
    assert "refused: The file is not an image that can be read" in html


def test_change_list_shows_thumbnail_status_and_counts(staff_client, image_factory):
    ready = image_factory(1, status=Image.Status.READY)
    failed = image_factory(2, status=Image.Status.FAILED, embedding_error="The stored file is missing.")
    image_factory(3)
    renditions_create(image=ready)
    html = staff_client.get(LIST_URL).content.decode()
    assert ready.renditions.get(kind="display", spec=320).file.url in html
    assert ready.file.url not in html  # the admin shows web renditions only
    assert html.count("preparing…") == 2  # the others' renditions are on the way
    assert "320 × 240" not in html and "64 × 48" in html
    assert "failed: The stored file is missing." in html
    assert "pending 1" in html and "ready 1" in html and "failed 1" in html
    assert "resnet18/random-seed0" in html
    filtered = staff_client.get(LIST_URL + "?embedding_status=failed")
    assert list(filtered.context["cl"].result_list) == [failed]


def test_search_by_caption_or_file_name(staff_client, image_factory):
    lighthouse = image_factory(1, caption="Lighthouse at dusk")
    other = image_factory(2, caption="Market", original_name="lighthouse-2.jpg")
    image_factory(3, caption="Forest")
    found = staff_client.get(LIST_URL + "?q=lighthouse").context["cl"].result_list
    assert set(found) == {lighthouse, other}


def test_only_staff_can_upload(client, django_user_model, make_upload):
    response = client.post(ADD_URL, {"files": [make_upload(1)]})
    assert response.status_code == 302 and "/login/" in response["Location"]
    user = django_user_model.objects.create_user("visitor", password="x")
    client.force_login(user)
    response = client.post(ADD_URL, {"files": [make_upload(1)]})
    assert response.status_code == 302 and "/login/" in response["Location"]
    assert Image.objects.count() == 0


def test_upload_form_is_csrf_protected(django_user_model, make_upload):
    from django.test import Client

    user = django_user_model.objects.create_superuser("strict", "s@example.com", "pw")
    strict = Client(enforce_csrf_checks=True)
    strict.force_login(user)
    assert strict.post(ADD_URL, {"files": [make_upload(1)]}).status_code == 403
    assert Image.objects.count() == 0


def test_recompute_action_puts_images_back_in_the_queue(staff_client, image_factory, django_capture_on_commit_callbacks):
    image = image_factory(1, status=Image.Status.FAILED, embedding_error="boom", embedding_attempts=5)
    with django_capture_on_commit_callbacks() as callbacks:
        staff_client.post(LIST_URL, {"action": "retry_failed", "_selected_action": [image.pk]})
    image.refresh_from_db()
    assert image.embedding_status == Image.Status.PENDING and image.embedding_attempts == 0
    assert image.embedding_error == ""
    assert len(tasks(callbacks)) == 1


# --- One file, one outcome: a batch never loses a file to another -------------------------


def tiff_without_width() -> bytes:
    """A valid TIFF with the ImageWidth entry (tag 256) taken out of its directory.

    The entries after it move up and the directory's count drops by one; nothing else in the
    file moves, so every other offset still points where it did.
    """
    data = bytearray(encode(photo_like(7, (64, 48)), "TIFF"))
    assert data[:4] == b"II*\x00"
    directory = int.from_bytes(data[4:8], "little")
    count = int.from_bytes(data[directory : directory + 2], "little")
    entries = [data[directory + 2 + 12 * index : directory + 14 + 12 * index] for index in range(count)]
    kept = [entry for entry in entries if int.from_bytes(entry[:2], "little") != 256]
    assert len(kept) == count - 1
    next_directory = data[directory + 2 + 12 * count : directory + 6 + 12 * count]
    rewritten = len(kept).to_bytes(2, "little") + b"".join(kept) + next_directory + bytes(12)
    data[directory : directory + len(rewritten)] = rewritten
    return bytes(data)


def failing_for(monkeypatch, name: str, error: BaseException):
    """Make validating the file called ``name`` raise ``error``, as a bug in our code would."""
    from gallery import services

    inspect_image = services.inspect_image

    def inspect(upload):
        if upload.name == name:
            raise error
        return inspect_image(upload)

    monkeypatch.setattr(services, "inspect_image", inspect)


@pytest.fixture
def published(monkeypatch):
    """The image ids of each follow-up publication, as the broker would be sent them."""
    from gallery import pipeline

    sent = []
    monkeypatch.setattr(pipeline, "images_follow_up_publish", lambda *, image_ids, **kinds: sent.append(sorted(image_ids)))
    return sent


def test_a_file_that_meets_a_bug_is_refused_alone_and_logged_once(
    staff_client, make_upload, monkeypatch, caplog, published, django_capture_on_commit_callbacks
):
    failing_for(monkeypatch, "broken.jpg", RuntimeError("a bug in the pipeline"))
    files = [make_upload(1, name="good.jpg"), make_upload(2, name="broken.jpg"), make_upload(3, name="after.jpg")]

    with django_capture_on_commit_callbacks(execute=True):
        response = staff_client.post(ADD_URL, {"files": files, "caption": "", "tags": "harbour, night"})

    assert response.status_code == 200
    rows = {outcome.name: outcome for outcome in response.context["outcomes"]}
    assert list(rows) == ["good.jpg", "broken.jpg", "after.jpg"]
    assert rows["good.jpg"].status == rows["after.jpg"].status == "added"
    assert rows["broken.jpg"].status == "refused" and "unexpected error" in rows["broken.jpg"].error
    assert "1 refused." in response.content.decode()
    assert set(Image.objects.values_list("original_name", flat=True)) == {"good.jpg", "after.jpg"}
    for image in Image.objects.all():  # tagged in the same call, each in its own transaction
        assert sorted(tag.name for tag in image.tags.all()) == ["harbour", "night"]
    # Each added image's follow-up work is published on its own, when its row commits.
    assert published == [[rows["good.jpg"].image.pk], [rows["after.jpg"].image.pk]]
    logged = [record for record in caplog.records if record.levelname == "ERROR"]
    assert len(logged) == 1 and logged[0].exc_info and "broken.jpg" in logged[0].getMessage()


def test_a_tiff_without_a_width_is_refused_with_a_reason_and_the_rest_is_added(staff_client, make_upload, caplog):
    files = [upload("scan.tif", tiff_without_width()), make_upload(1, name="good.jpg")]
    response = staff_client.post(ADD_URL, {"files": files})

    assert response.status_code == 200
    rows = {outcome.name: outcome for outcome in response.context["outcomes"]}
    assert rows["good.jpg"].status == "added"
    # Refused by the decoder, with its reason: a damaged file is no bug of ours.
    assert rows["scan.tif"].status == "refused" and rows["scan.tif"].error
    assert rows["scan.tif"].error != UNEXPECTED_ERROR
    assert not [record for record in caplog.records if record.levelname == "ERROR"]
    assert list(Image.objects.values_list("original_name", flat=True)) == ["good.jpg"]


@pytest.mark.parametrize(
    "uploaded_name, image_format, downloaded_name",
    [
        ("photo.exe", "JPEG", "photo.jpg"),
        ("scan.jpg", "TIFF", "scan.tif"),
        ("no-extension", "PNG", "no-extension.png"),
        ("animation.html", "GIF", "animation.gif"),
        ("picture.svg", "WEBP", "picture.webp"),
        ("drawing.bmp.js", "BMP", "drawing.bmp.bmp"),
    ],
)
def test_the_original_downloads_with_the_extension_of_its_detected_format(
    staff_client, uploaded_name, image_format, downloaded_name
):
    from gallery.services import image_create

    image = image_create(upload=upload(uploaded_name, encode(photo_like(4, (64, 48)), image_format)), enqueue=False)
    assert image.original_name == uploaded_name  # shown as uploaded; only the download is renamed

    response = staff_client.get(reverse("admin:gallery_image_original", args=[image.pk]))

    assert response.status_code == 200
    assert response["Content-Disposition"] == f'attachment; filename="{downloaded_name}"'
    assert response["Content-Type"] == f"image/{image_format.lower()}"


def test_an_upload_with_a_tag_name_too_long_is_refused_before_anything_is_stored(staff_client, make_upload):
    response = staff_client.post(ADD_URL, {"files": [make_upload(1)], "tags": "harbour, " + "n" * 61})

    assert response.status_code == 200
    assert "at most 60 characters" in response.content.decode()
    assert not Image.objects.exists() and not Tag.objects.exists()
