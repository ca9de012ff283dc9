"""The upload API behind the admin's upload page: one file per request, a bulk check of the
content hashes the gallery already holds, and zip archives expanded by a real worker."""

import base64
import hashlib
import io
import time
import zipfile

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.urls import reverse

from devtools import services as dev_services
from gallery.models import ArchiveUpload, Image
from gallery.services import archive_upload_expand
from tests.conftest import encode, photo_like, upload, wait_for

pytestmark = pytest.mark.django_db

UPLOAD_URL = reverse("gallery:api-upload")
CHECK_URL = reverse("gallery:api-upload-check")


def archive_url(archive_id: int) -> str:
    return reverse("gallery:api-upload-archive", args=[archive_id])


def photo(seed: int, size=(64, 48)) -> bytes:
    return encode(photo_like(seed, size))


def broken_photo(seed: int) -> bytes:
    return photo(seed)[:300]  # a JPEG cut short: it does not decode


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def make_zip(entries) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, content in entries:
            archive.writestr(name, content)
    return buffer.getvalue()


def send(client, content: bytes, name: str = "photo.jpg", **fields):
    return client.post(UPLOAD_URL, {"file": upload(name, content), **fields})


def check(client, hashes, **fields):
    return client.post(CHECK_URL, {"sha256": hashes, **fields}, content_type="application/json")


def tag_names(image: Image) -> set[str]:
    return {tag.name for tag in image.tags.all()}


# --- One file per request ---------------------------------------------------------------


def test_a_new_photo_is_added_under_its_path_with_its_folders_as_tags(staff_client):
    response = send(
        staff_client, photo(1), name="IMG_1.jpg", path="trip/day 1/IMG_1.jpg", tags="harbour, night", folder_tags="true"
    )

    assert response.status_code == 201, response.content
    body = response.json()
    image = Image.objects.get()
    assert body["status"] == "added" and body["name"] == "trip/day 1/IMG_1.jpg"
    assert body["image"]["id"] == image.pk and body["image"]["embedding_status"] == "pending"
    assert {tag["name"] for tag in body["image"]["tags"]} == {"harbour", "night", "trip", "day 1"}
    assert tag_names(image) == {"harbour", "night", "trip", "day 1"}
    # Shown under the file's name; kept in the private storage under a generated one.
    assert image.original_name == "IMG_1.jpg" and image.caption == "IMG 1"
    assert image.uploaded_by == staff_client.user
    assert "IMG_1" not in image.file.name


def test_without_folder_tags_the_path_is_only_the_name(staff_client):
    response = send(staff_client, photo(1), path="trip/IMG_1.jpg", caption="At the harbour")
    assert response.status_code == 201
    image = Image.objects.get()
    assert response.json()["name"] == "trip/IMG_1.jpg"
    assert tag_names(image) == set() and image.caption == "At the harbour"


def test_the_same_bytes_again_are_a_duplicate_that_gets_the_tags(staff_client):
    first = send(staff_client, photo(1), name="first.jpg").json()["image"]

    response = send(staff_client, photo(1), name="again.jpg", path="later/again.jpg", tags="kept", folder_tags="1")

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["status"] == "duplicate" and body["name"] == "later/again.jpg"
    assert body["image"]["id"] == first["id"]
    assert Image.objects.count() == 1
    assert tag_names(Image.objects.get()) == {"kept", "later"}


def test_a_broken_file_is_refused_with_the_admin_forms_reason(staff_client):
    response = send(staff_client, broken_photo(1), name="broken.jpg")

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["status"] == 400 and error["message"] and error["fields"] == {"file": error["message"]}
    assert Image.objects.count() == 0
    # The admin's form says the same of the same file, in the same words.
    page = staff_client.post(reverse("admin:gallery_image_add"), {"files": [upload("broken.jpg", broken_photo(1))]})
    assert [outcome.error for outcome in page.context["outcomes"]] == [error["message"]]


@pytest.mark.parametrize(
    "fields, field",
    [
        ({}, "file"),
        ({"file": "not a file"}, "file"),
        ({"tags": "x" * 70}, "tags"),
        ({"caption": "c" * 301}, "caption"),
    ],
    ids=["no file", "a string", "a tag too long", "a caption too long"],
)
def test_a_bad_request_is_a_400_naming_the_field(staff_client, fields, field):
    data = {"file": upload("photo.jpg", photo(1)), **fields} if field != "file" else fields
    response = staff_client.post(UPLOAD_URL, data)
    assert response.status_code == 400
    error = response.json()["error"]
    assert field in error["fields"] and error["message"] == error["fields"][field]
    assert Image.objects.count() == 0


# --- Who may upload ---------------------------------------------------------------------


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


def requests_of_every_endpoint(client, **extra):
    archive = ArchiveUpload.objects.create(name="kept.zip")
    return {
        "upload": client.post(UPLOAD_URL, {"file": upload("photo.jpg", photo(2))}, **extra),
        "check": client.post(CHECK_URL, {"sha256": [sha256(photo(1))], "tags": "new"}, content_type="application/json", **extra),
        "archive": client.get(archive_url(archive.pk), **extra),
    }


@pytest.mark.parametrize("who", ["nobody", "a signed-in visitor", "staff without the add permission", "staff by HTTP Basic without it"])
def test_only_staff_who_may_add_images_use_any_upload_endpoint(client, django_user_model, image_factory, who):
    from django.contrib.auth.models import Permission

    known = image_factory(1)
    extra = {}
    if who != "nobody":
        user = django_user_model.objects.create_user("someone", password="a-long-password", is_staff=who != "a signed-in visitor")
        # Every gallery permission but adding images.
        user.user_permissions.set(Permission.objects.filter(content_type__app_label="gallery").exclude(codename="add_image"))
        if who.endswith("HTTP Basic without it"):
            client, extra = Client(), {"HTTP_AUTHORIZATION": basic_auth("someone", "a-long-password")}
        else:
            client.force_login(user)

    for endpoint, response in requests_of_every_endpoint(client, **extra).items():
        assert response.status_code == 403, (endpoint, response.content)
        assert response.json()["error"]["status"] == 403
    assert list(Image.objects.all()) == [known] and tag_names(known) == set()


def test_staff_with_the_add_permission_use_them_by_session_or_http_basic(django_user_model, image_factory):
    from django.contrib.auth.models import Permission

    image_factory(1)
    user = django_user_model.objects.create_user("adder", password="a-long-password", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(codename="add_image"))
    session = Client(enforce_csrf_checks=True)
    session.force_login(user)

    by_session = requests_of_every_endpoint(Client(), HTTP_AUTHORIZATION=basic_auth("adder", "a-long-password"))
    assert {name: response.status_code for name, response in by_session.items()} == {
        "upload": 201, "check": 200, "archive": 200,
    }
    # A page's script signs its writes with the CSRF token; without it the session is not enough.
    assert session.post(CHECK_URL, {"sha256": []}, content_type="application/json").status_code == 403
    session.get(reverse("admin:gallery_image_add"))
    token = session.cookies["csrftoken"].value
    answer = session.post(CHECK_URL, {"sha256": []}, content_type="application/json", HTTP_X_CSRFTOKEN=token)
    assert answer.status_code == 200 and answer.json() == {"known": []}


# --- Which files the gallery already holds ------------------------------------------------


def test_the_check_returns_only_the_hashes_the_gallery_holds(staff_client, image_factory):
    known = [image_factory(seed) for seed in (1, 2)]
    unknown = [sha256(photo(seed)) for seed in (10, 11, 12)]

    response = check(staff_client, [known[1].sha256, *unknown, known[0].sha256, known[0].sha256])

    assert response.status_code == 200
    found = {item["sha256"]: item["image"] for item in response.json()["known"]}
    assert found.keys() == {image.sha256 for image in known}
    assert {sha: image["id"] for sha, image in found.items()} == {image.sha256: image.pk for image in known}
    assert found[known[0].sha256].keys() >= {"id", "caption", "thumbnail_url", "api_url", "tags", "embedding_status"}


def test_the_checks_tags_go_to_the_known_images(staff_client, image_factory):
    known = image_factory(1)
    response = check(staff_client, [known.sha256, sha256(photo(10))], tags="harbour, night")

    assert {tag["name"] for tag in response.json()["known"][0]["image"]["tags"]} == {"harbour", "night"}
    assert tag_names(known) == {"harbour", "night"}
    assert Image.objects.count() == 1


def test_at_most_upload_check_max_hashes_per_request(staff_client, image_factory, settings):
    settings.UPLOAD_CHECK_MAX = 5
    hashes = [sha256(str(number).encode()) for number in range(6)]

    too_many = check(staff_client, hashes)
    assert too_many.status_code == 400
    assert "At most 5" in too_many.json()["error"]["fields"]["sha256"]
    assert check(staff_client, hashes[:5]).status_code == 200


@pytest.mark.parametrize(
    "body",
    [
        {"sha256": ["A" * 64]},  # upper case
        {"sha256": ["a" * 63]},
        {"sha256": ["g" * 64]},
        {"sha256": [64]},
        {"sha256": "a" * 64},  # not a list
        {"sha256": [["a" * 64]]},
        {"tags": "no hashes"},
        ["a" * 64],
    ],
)
def test_malformed_hashes_are_a_400(staff_client, body):
    response = staff_client.post(CHECK_URL, body, content_type="application/json")
    assert response.status_code == 400, response.content
    assert response.json()["error"]["status"] == 400


# --- Request size -----------------------------------------------------------------------------


def test_a_body_over_the_upload_limit_is_a_json_413_and_the_check_keeps_the_small_limit(staff_client, settings):
    settings.UPLOAD_MAX_REQUEST_BYTES = 10_000
    settings.REQUEST_MAX_BYTES = 1_000

    too_large = send(staff_client, photo(1, size=(400, 300)))
    assert too_large.status_code == 413 and too_large.json()["error"]["status"] == 413
    assert send(staff_client, photo(1)).status_code == 201
    hashes = [sha256(str(number).encode()) for number in range(20)]  # about 1,400 bytes
    assert check(staff_client, hashes).status_code == 413
    assert Image.objects.count() == 1


# --- Zip archives ---------------------------------------------------------------------------


def test_a_zip_is_stored_privately_and_queued_and_the_request_does_not_wait(
    staff_client, settings, django_capture_on_commit_callbacks
):
    content = make_zip([("a/one.jpg", photo(1)), ("two.jpg", photo(2))])
    with django_capture_on_commit_callbacks(execute=True):
        response = send(staff_client, content, name="drop.zip", path="trip/drop.zip", tags="holiday", folder_tags="on")

    assert response.status_code == 202, response.content
    body = response.json()
    archive = ArchiveUpload.objects.get()
    assert body == {
        "status": "archive",
        "name": "trip/drop.zip",
        "archive": {
            "id": archive.pk, "name": "trip/drop.zip", "state": "queued", "members_total": 0, "members_done": 0,
            "added": 0, "duplicates": 0, "refused": 0, "error": "", "refusals": [],
        },
    }
    assert response["Location"] == archive_url(archive.pk)
    assert staff_client.get(response["Location"]).json() == body["archive"]
    assert Image.objects.count() == 0  # nothing until a worker expands it
    # Kept in the originals' private storage, under a generated name; the drop's tags kept with it.
    assert archive.file.name.startswith("archives/") and "drop" not in archive.file.name
    assert archive.file.read() == content
    assert archive.tag_names == ["holiday", "trip"] and archive.folder_tags


def test_a_zip_over_the_limit_is_refused_at_once_and_not_kept(staff_client, settings):
    settings.ZIP_MAX_TOTAL_BYTES = 1000
    response = send(staff_client, make_zip([("one.jpg", photo(1))]), name="big.zip")
    assert response.status_code == 400
    assert "too large" in response.json()["error"]["message"]
    assert ArchiveUpload.objects.count() == 0


def stored_archives(settings) -> set:
    return {path for path in (settings.MEDIA_ROOT / "archives").rglob("*") if path.is_file()}


needs_embedded_redis = pytest.mark.skipif(
    dev_services.services_urls(django_settings.TEST_DATA_DIR).get("CELERY_BROKER_URL") != django_settings.CELERY_BROKER_URL,
    reason="stops and starts the embedded Redis",
)


@pytest.mark.end_to_end
@needs_embedded_redis
def test_a_zip_sent_while_the_broker_is_down_is_a_503_worth_retrying_and_is_not_kept(
    staff_client, transactional_db, settings
):
    before = stored_archives(settings)
    dev_services.redis_stop(settings.TEST_DATA_DIR)
    try:
        started = time.monotonic()
        response = send(staff_client, make_zip([("one.jpg", photo(1))]), name="outage.zip")
        seconds = time.monotonic() - started
    finally:
        dev_services.redis_start(settings.TEST_DATA_DIR)

    # Answered promptly, with a status the page sends again after a pause (a 5xx).
    assert response.status_code == 503, response.content
    assert "send it again" in response.json()["error"]["message"]
    assert seconds < 15
    archive = ArchiveUpload.objects.get()
    assert archive.state == "failed" and archive.file.name == ""
    assert stored_archives(settings) == before


def test_an_unknown_archive_is_a_json_404(staff_client):
    response = staff_client.get(archive_url(12345))
    assert response.status_code == 404 and response.json()["error"]["status"] == 404


def wait_until_finished(archive_id: int, timeout: float = 120) -> ArchiveUpload:
    return wait_for(
        lambda: ArchiveUpload.objects.filter(pk=archive_id, state__in=["done", "failed"]).first(),
        timeout=timeout,
        interval=0.2,
        message=f"archive {archive_id} to be finished",
    )


@pytest.mark.end_to_end
def test_a_worker_expands_a_zip_counting_as_it_goes(staff_client, start_worker, settings):
    start_worker()
    send(staff_client, photo(50), name="already.jpg")
    members = [
        *[(f"day{seed % 2}/photo-{seed}.jpg", photo(seed)) for seed in range(10)],
        ("day1/already.jpg", photo(50)),
        ("broken.jpg", broken_photo(60)),
        ("__MACOSX/._photo-1.jpg", b"junk"),  # skipped without a word, as in the admin
    ]
    before = stored_archives(settings)
    response = send(staff_client, make_zip(members), name="holiday.zip", tags="holiday", folder_tags="true")
    assert response.status_code == 202
    archive_id = response.json()["archive"]["id"]

    wait_until_finished(archive_id)
    status = staff_client.get(archive_url(archive_id)).json()

    assert status | {"refusals": None} == {
        "id": archive_id, "name": "holiday.zip", "state": "done", "members_total": 12, "members_done": 12,
        "added": 10, "duplicates": 1, "refused": 1, "error": "", "refusals": None,
    }
    [refusal] = status["refusals"]
    assert refusal["name"] == "holiday.zip: broken.jpg" and refusal["reason"]
    assert Image.objects.count() == 11
    image = Image.objects.get(sha256=sha256(photo(3)))
    assert image.original_name == "photo-3.jpg" and tag_names(image) == {"holiday", "day1"}
    assert tag_names(Image.objects.get(sha256=sha256(photo(50)))) == {"holiday", "day1"}  # the duplicate too
    # The stored zip is deleted once done.
    assert ArchiveUpload.objects.get(pk=archive_id).file.name == ""
    assert stored_archives(settings) == before


@pytest.mark.end_to_end
def test_a_long_archive_is_finished_by_runs_that_each_resume_where_the_last_stopped(staff_client, start_worker):
    # Every run hands the rest to a fresh one after its first member.
    start_worker(extra_env={"ARCHIVE_RUN_SECONDS": "0"})
    members = [(f"photo-{seed}.jpg", photo(seed)) for seed in range(5)]
    archive_id = send(staff_client, make_zip(members), name="five.zip").json()["archive"]["id"]

    archive = wait_until_finished(archive_id)

    assert (archive.state, archive.members_done, archive.added, archive.duplicates) == ("done", 5, 5, 0)
    assert Image.objects.count() == 5


@pytest.mark.end_to_end
def test_a_broken_archive_fails_with_the_reason(staff_client, start_worker):
    start_worker()
    content = make_zip([("one.jpg", photo(1))])
    response = send(staff_client, content[: len(content) // 2] + b"\0" * 200, name="cut.zip")
    assert response.status_code == 202
    archive = wait_until_finished(response.json()["archive"]["id"])
    assert archive.state == "failed" and "damaged" in archive.error and archive.file.name == ""
    assert Image.objects.count() == 0


@pytest.mark.end_to_end
def test_an_archive_whose_worker_is_killed_is_finished_by_the_redelivery_without_double_counts(
    staff_client, start_worker
):
    first = start_worker()
    # Photo-sized, so that the worker is caught part-way (small pictures, scaled up: quick to make).
    members = [(f"photo-{seed}.jpg", encode(photo_like(seed, (160, 120)).resize((1600, 1200)))) for seed in range(40)]
    response = send(staff_client, make_zip(members), name="big.zip")
    archive_id = response.json()["archive"]["id"]
    wait_for(
        lambda: ArchiveUpload.objects.filter(pk=archive_id, members_done__gte=3).exists(),
        timeout=120, interval=0.05, message="the worker to be part-way through",
    )
    first.kill()
    stopped = ArchiveUpload.objects.get(pk=archive_id)
    assert stopped.state == "expanding" and stopped.members_done < 40, "finished before it was killed"

    # The broker hands the unacknowledged message to the next worker once its visibility timeout is past.
    start_worker(extra_env={"CELERY_VISIBILITY_TIMEOUT": "2"})
    archive = wait_until_finished(archive_id, timeout=180)

    assert (archive.state, archive.members_done, archive.added, archive.duplicates, archive.refused) == ("done", 40, 40, 0, 0)
    assert sorted(Image.objects.values_list("sha256", flat=True)) == sorted(sha256(content) for _, content in members)

    # Run once more, the task finds the archive finished and adds nothing.
    assert archive_upload_expand(archive_id=archive_id).added == 40
    assert Image.objects.count() == 40
    again = ArchiveUpload.objects.get(pk=archive_id)
    assert (again.state, again.members_done, again.added, again.duplicates) == ("done", 40, 40, 0)


def test_the_admin_lists_archives_with_their_progress_read_only(staff_client):
    archive = ArchiveUpload.objects.create(
        name="trip.zip", state="expanding", members_total=3, members_done=2, added=1, refused=1,
        refusals=[{"name": "trip.zip: <b>broken</b>.jpg", "reason": "It is not an image."}],
    )

    listing = staff_client.get(reverse("admin:gallery_archiveupload_changelist"))
    page = staff_client.get(reverse("admin:gallery_archiveupload_change", args=[archive.pk]))

    assert listing.status_code == 200 and "2 of 3" in listing.content.decode()
    assert page.status_code == 200
    assert "trip.zip: &lt;b&gt;broken&lt;/b&gt;.jpg: It is not an image." in page.content.decode()
    assert staff_client.get(reverse("admin:gallery_archiveupload_add")).status_code == 403
