"""Schema-driven fuzzing: Schemathesis reads /api/schema/ from the live test server (a real
HTTP server) and sends every operation requests made from its own description, valid and
invalid; no answer may be a 5xx, and every answer must be what the schema says (documented
status, content type, and body).

Bounded so that it runs in about a minute on two cores: a fixed number of examples per
operation, derandomised (the same requests every run), no deadline per example.
Select it alone with ``-m fuzz``; `make test` runs it with the rest.
"""

import base64
from collections import Counter

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest import unit_vector

pytestmark = pytest.mark.fuzz

EXAMPLES_PER_OPERATION = 40


def no_server_error(ctx, response, case):
    """No 5xx, except search's documented 503: no embedding worker runs in this test."""
    if response.status_code == 503 and case.operation.label == "POST /api/search/":
        return None
    return not_a_server_error(ctx, response, case)


CHECKS = [
    no_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
STAFF = ("fuzz-curator", "fuzz-curator-password")


@pytest.fixture
def gallery_ids(transactional_db, image_factory, django_user_model):
    """A small gallery (vectors, tags, renditions, one image still pending) and a staff account."""
    from gallery.renditions import renditions_create
    from gallery.services import images_tag

    images = [image_factory(seed, vector=unit_vector(1, seed / 4, seed % 3)) for seed in range(6)]
    images.append(image_factory(99))  # no vector yet: no neighbours
    images_tag(image_ids=[image.pk for image in images[:3]], names=["harbour"])
    renditions_create(image=images[0])
    django_user_model.objects.create_superuser(STAFF[0], "fuzz@example.com", STAFF[1])
    return [image.pk for image in images]


@pytest.fixture
def archive_ids(transactional_db):
    """Archive uploads as the status endpoint shows them: queued, and done with a refusal."""
    from gallery.models import ArchiveUpload

    queued = ArchiveUpload.objects.create(name="queued.zip")
    done = ArchiveUpload.objects.create(
        name="done.zip", state=ArchiveUpload.State.DONE, members_total=2, members_done=2, added=1, refused=1,
        refusals=[{"name": "done.zip: broken.jpg", "reason": "It is not an image."}],
    )
    return [queued.pk, done.pk]


@pytest.fixture
def api_schema(live_server, gallery_ids, settings):
    # No search worker runs here: a valid photo gets the documented 503, soon.
    settings.SEARCH_TIMEOUT_SECONDS = 0.2
    # The per-address limit (429, tested in test_api.py) would answer most searches here
    # before their input is even read.
    settings.SEARCH_RATE = "100000/m"
    return schemathesis.openapi.from_url(f"{live_server.url}/api/schema/?format=json")


def staff_headers(case) -> dict:
    if case.method.upper() != "PATCH" and not case.operation.path.startswith("/api/uploads/"):
        return {}
    # Anonymous writes (and uploads) are refused (tests/gallery/test_api.py,
    # test_upload_api.py); here the edit and the uploads themselves are fuzzed.
    return {"Authorization": "Basic " + base64.b64encode(":".join(STAFF).encode()).decode()}


def onto_the_gallery(case, gallery_ids: list[int], archive_ids: list[int]) -> None:
    """Most generated ids are small: map them onto the gallery's images (or archive uploads),
    so 200 answers are checked too. Negative and large ids stay as generated (404s, values
    beyond bigint)."""
    id_ = (case.path_parameters or {}).get("id")
    ids = archive_ids if case.operation.path.startswith("/api/uploads/archives/") else gallery_ids
    if isinstance(id_, int) and 0 <= id_ < 1000:
        case.path_parameters["id"] = ids[id_ % len(ids)]


# Schemathesis's own pytest wrapper (schemathesis.pytest.from_fixture) does not run under
# pytest 9 (it sets Function._nodeid), so each operation gets a Hypothesis test of its own
# here, built from the operation's strategy: the same generation and the same checks.
@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_the_api_answers_every_request_as_its_schema_says(api_schema, gallery_ids, archive_ids, mode):
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {operation.label for operation in operations} == {
        "GET /api/images/", "GET /api/images/{id}/", "PATCH /api/images/{id}/",
        "GET /api/images/{id}/similar/", "POST /api/search/",
        "POST /api/uploads/", "POST /api/uploads/check/", "GET /api/uploads/archives/{id}/",
    }
    statuses: Counter = Counter()
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        def answers_as_documented(case):
            onto_the_gallery(case, gallery_ids, archive_ids)
            response = case.call_and_validate(headers=staff_headers(case), checks=CHECKS)
            statuses[(operation.label, response.status_code)] += 1

        answers_as_documented()
    print(f"\n{mode.value} requests by operation and status:", dict(sorted(statuses.items())))
    # Each operation was exercised, and the reads reached real images, not only errors.
    assert {label for label, _ in statuses} == {operation.label for operation in operations}
    if mode is GenerationMode.POSITIVE:
        for label in (
            "GET /api/images/", "GET /api/images/{id}/", "GET /api/images/{id}/similar/",
            "POST /api/uploads/check/", "GET /api/uploads/archives/{id}/",
        ):
            assert statuses[(label, 200)] > 0, label
