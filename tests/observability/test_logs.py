"""Pipeline log lines name their images; JSON when LOG_FORMAT says so.

(Web lines and their request ids: tests/imagerec/test_gunicorn.py, under a real gunicorn.)
"""

import json

import pytest
from django.test import Client

from gallery.models import Image, Rendition
from gallery.services import image_create
from tests.conftest import encode, photo_like, upload, wait_for

PIPELINE_LOGGERS = ("gallery.", "similarity.embedding", "similarity.pipeline", "celery.app.trace", "celery.worker.strategy")


@pytest.mark.end_to_end
def test_every_pipeline_line_of_a_real_worker_names_its_images_in_json(start_worker):
    worker = start_worker(extra_env={"LOG_FORMAT": "json"})
    image_ids = [image_create(upload=upload(f"logs-{seed}.jpg", encode(photo_like(seed)))).pk for seed in range(3)]
    wait_for(lambda: Image.objects.filter(pk__in=image_ids).ready().count() == 3, timeout=60, message="3 embeddings")
    wait_for(
        lambda: Rendition.objects.filter(image_id__in=image_ids, kind="display", spec=640).count() == 3, timeout=60, message="thumbnails"
    )
    worker.stop()

    records = [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]
    pipeline = [record for record in records if record["logger"].startswith(PIPELINE_LOGGERS)]
    # Tasks of both kinds were received and finished (how many depends on which task claimed
    # which images first), and embeddings were stored.
    messages = [record["message"] for record in pipeline]
    for task in ("similarity.images_embed", "gallery.renditions_create"):
        assert any(message.startswith(f"Task {task}[") and message.endswith("] received") for message in messages)
        assert any(message.startswith(f"Task {task}[") and "] succeeded in " in message for message in messages)
    unnamed = [record["message"] for record in pipeline if not record.get("image_ids")]
    assert unnamed == []
    named = set().union(*(record["image_ids"] for record in pipeline))
    assert named == set(image_ids)
    embedded = [record for record in pipeline if record["message"].startswith("Embedded ")]
    assert sorted(set().union(*(record["image_ids"] for record in embedded))) == sorted(image_ids)
    # A task's own lines name the images it was sent, as its arguments did.
    for record in pipeline:
        if record["logger"] in ("celery.app.trace", "celery.worker.strategy"):
            assert record["image_ids"] == json.loads(record["data"]["args"])[0]


# --- A scanner's requests -------------------------------------------------------------------


def scanner_requests(staff_without_permissions) -> list:
    """Requests a scanner sends, each answered 4xx because of an exception Django logs."""
    many_fields = "&".join(f"f{n}=1" for n in range(1200))

    def nul_in_path(client, n):
        return client.get(f"/images/{n}%00/")

    def nul_and_newline_in_path(client, n):
        return client.get(f"/images/{n}%00%0a%0d2026-01-01 ERROR FAKE LINE/")

    def unknown_host(client, n):
        return client.get("/", HTTP_HOST=f"scanner-{n}.example.net")

    def admin_without_permission(client, n):
        client.force_login(staff_without_permissions)
        return client.get("/admin/gallery/image/")

    def too_many_fields(client, n):
        return client.post("/admin/login/", many_fields, content_type="application/x-www-form-urlencoded")

    def too_large_form(client, n):
        return client.post("/admin/login/", "a=" + "x" * 20_000, content_type="application/x-www-form-urlencoded")

    def broken_multipart(client, n):
        return client.post("/admin/login/", b"--x\r\nbroken", content_type="multipart/form-data; boundary=")

    return [
        (nul_in_path, 400), (nul_and_newline_in_path, 400), (unknown_host, 400), (admin_without_permission, 403),
        (too_many_fields, 400), (too_large_form, 400), (broken_multipart, 400),
    ]


@pytest.fixture
def console_lines():
    """What the site's console handler writes while the test runs, as lines."""
    import io
    import logging

    (handler,) = [handler for handler in logging.getLogger().handlers if handler.get_name() == "console"]
    captured = io.StringIO()
    previous = handler.setStream(captured)
    yield lambda: captured.getvalue().splitlines()
    handler.setStream(previous)


@pytest.mark.django_db
def test_a_thousand_scanner_requests_log_one_line_each_without_a_traceback(
    console_lines, django_user_model, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000  # so a form of 20 kB is "too large"
    staff = django_user_model.objects.create_user("staff-without-permissions", password="x" * 12, is_staff=True)
    kinds = scanner_requests(staff)
    client = Client(raise_request_exception=False)

    statuses = {}
    for n in range(1000):
        send, expected = kinds[n % len(kinds)]
        status = send(client, n).status_code
        assert status == expected, (send.__name__, status)
        statuses[send.__name__] = status

    lines = console_lines()
    assert not [line for line in lines if "Traceback" in line or line.startswith((" ", "\t"))]
    assert len(lines) == 1000, lines[:20]
    # Each still says what happened, at WARNING: expected, not the site's fault.
    assert all(" WARNING " in line for line in lines), [line for line in lines if " WARNING " not in line][:5]
    assert any("Invalid HTTP_HOST header: 'scanner-2.example.net'" in line for line in lines)
    assert any("Forbidden (Permission denied): /admin/gallery/image/" in line for line in lines)
    # A newline in a URL is escaped: it cannot start a forged line of its own.
    assert any("\\n\\r2026-01-01 ERROR FAKE LINE" in line for line in lines)
    assert not [line for line in lines if line.startswith("2026-01-01 ERROR")]
