import base64
import json
import re
import time

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.client import BOUNDARY, MULTIPART_CONTENT, encode_multipart
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from gallery.models import Image

from tests.conftest import encode, photo_like, unit_vector, upload, wait_for

pytestmark = pytest.mark.django_db


@pytest.fixture
def gallery_images(image_factory):
    chosen = image_factory(1, vector=unit_vector(1, 0), caption="picture 1")
    near = image_factory(2, vector=unit_vector(1, 0.1), caption="picture 2")
    middle = image_factory(3, vector=unit_vector(1, 1), caption="picture 3")
    far = image_factory(4, vector=unit_vector(0, 1), caption="picture 4")
    return chosen, near, middle, far


def similar_url(image, k=None) -> str:
    url = reverse("gallery:api-similar", args=[image.pk])
    return url if k is None else f"{url}?k={k}"


def test_lists_the_nearest_images_most_similar_first(client, gallery_images):
    chosen, near, middle, far = gallery_images

    response = client.get(similar_url(chosen, k=3))

    assert response.status_code == 200
    body = response.json()
    # The keys scripts have always read keep their meaning; the API adds others beside them.
    assert body["image"].items() >= {
        "id": chosen.pk,
        "caption": "picture 1",
        "url": None,  # no display rendition yet (never the original, which keeps camera data)
        "has_embedding": True,
    }.items()
    assert [item["id"] for item in body["similar"]] == [near.pk, middle.pk, far.pk]
    assert body["similar"][0].items() >= {
        "id": near.pk,
        "caption": "picture 2",
        "url": None,
        "similarity": pytest.approx(float(unit_vector(1, 0) @ unit_vector(1, 0.1)), abs=1e-5),
    }.items()
    assert body["similar"][1]["similarity"] == pytest.approx(2**-0.5, abs=1e-5)
    assert body["similar"][2]["similarity"] == pytest.approx(0.0, abs=1e-5)


def test_k_defaults_to_the_setting(client, gallery_images, settings):
    settings.RECOMMENDATIONS_K = 2
    assert len(client.get(similar_url(gallery_images[0], k=1)).json()["similar"]) == 1
    assert len(client.get(similar_url(gallery_images[0])).json()["similar"]) == 2


@pytest.mark.parametrize("k", ["many", "0", "-1", "51", "10000", "1.5"])
def test_a_bad_k_is_a_json_error_naming_the_parameter(client, gallery_images, k):
    response = client.get(similar_url(gallery_images[0], k=k))
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == 400 and set(error["fields"]) == {"k"}


@pytest.mark.parametrize("diverse", ["0", "1"])
def test_query_count_does_not_grow_with_k(client, gallery_images, image_factory, diverse):
    for number in range(5, 30):
        image_factory(number, vector=unit_vector(1, number / 10, 0.5))
    chosen = gallery_images[0]

    with CaptureQueriesContext(connection) as one:
        assert len(client.get(similar_url(chosen, k=1) + f"&diverse={diverse}").json()["similar"]) == 1
    with CaptureQueriesContext(connection) as twenty:
        assert len(client.get(similar_url(chosen, k=20) + f"&diverse={diverse}").json()["similar"]) == 20

    # The image (with whether it has a vector) and its tags, one index scan ordered by the
    # distance to its vector, read in a subquery, joining the neighbours' images, the
    # evidence of visitors' choices for this image (the default list interleaves both), and
    # the renditions of them all.
    assert len(one) == len(twenty) == 5


def test_an_image_without_a_vector_has_no_neighbours_yet(client, gallery_images, image_factory):
    pending = image_factory(99)

    body = client.get(similar_url(pending)).json()

    assert body["image"]["has_embedding"] is False
    assert body["similar"] == []


def test_unknown_image_is_a_json_404(client):
    response = client.get(reverse("gallery:api-similar", args=[123456]))
    assert response.status_code == 404
    assert response.json() == {"error": {"status": 404, "message": "No image with id 123456.", "fields": {}}}


def test_only_reads_are_allowed(staff_client, gallery_images):
    response = staff_client.post(similar_url(gallery_images[0]))
    assert response.status_code == 405 and response.json()["error"]["status"] == 405


# --- The list --------------------------------------------------------------------------


def test_the_list_is_paginated_newest_first_with_the_gallerys_page_size(client, image_factory, settings):
    settings.GALLERY_PAGE_SIZE = 2
    images = [image_factory(seed) for seed in range(5)]

    first = client.get(reverse("gallery:api-image-list")).json()
    last = client.get(first["next"]).json()
    last = client.get(last["next"]).json()

    assert first["count"] == 5 and first["previous"] is None
    assert [item["id"] for item in first["results"]] == [images[4].pk, images[3].pk]
    assert [item["id"] for item in last["results"]] == [images[0].pk] and last["next"] is None
    item = first["results"][0]
    assert item["api_url"] == reverse("gallery:api-image-detail", args=[images[4].pk])
    assert item["embedding_status"] == "pending" and item["tags"] == []


def test_the_list_keeps_to_a_tag(client, image_factory):
    from gallery.services import images_tag

    harbour = image_factory(1)
    image_factory(2)  # untagged: the filter leaves it out
    images_tag(image_ids=[harbour.pk], names=["Harbour"])

    body = client.get(reverse("gallery:api-image-list"), {"tag": "harbour"}).json()

    assert [item["id"] for item in body["results"]] == [harbour.pk]
    assert body["results"][0]["tags"] == [{"name": "Harbour", "slug": "harbour"}]


@pytest.mark.parametrize(
    "query, status, field",
    [({"tag": "no-such-tag"}, 400, "tag"), ({"page": "two"}, 400, "page"), ({"page_size": "1000"}, 400, "page_size"),
     ({"page": "9"}, 404, None)],
)
def test_bad_list_parameters_are_json_errors(client, image_factory, query, status, field):
    image_factory(1)
    response = client.get(reverse("gallery:api-image-list"), query)
    assert response.status_code == status and response["Content-Type"] == "application/json"
    error = response.json()["error"]
    assert error["status"] == status and set(error["fields"]) == ({field} if field else set())


def test_list_queries_do_not_grow_with_the_page(client, image_factory, settings):
    for seed in range(12):
        image_factory(seed)
    settings.GALLERY_PAGE_SIZE = 2
    with CaptureQueriesContext(connection) as small:
        client.get(reverse("gallery:api-image-list"))
    settings.GALLERY_PAGE_SIZE = 12
    with CaptureQueriesContext(connection) as large:
        client.get(reverse("gallery:api-image-list"))
    assert len(small) == len(large) == 5  # count, page, its renditions, its tags, its embeddings' statuses


# --- One image -------------------------------------------------------------------------


def test_the_detail_lists_the_renditions_never_the_original(client, image_factory):
    from gallery.renditions import renditions_create
    from gallery.services import images_tag

    image = image_factory(1, vector=unit_vector(1, 0), caption="harbour at night")
    images_tag(image_ids=[image.pk], names=["night"])
    renditions_create(image=image)

    response = client.get(reverse("gallery:api-image-detail", args=[image.pk]))

    body = response.json()
    assert response.status_code == 200
    assert body["caption"] == "harbour at night" and (body["width"], body["height"]) == (64, 48)
    assert body["embedding_status"] == "ready" and body["has_embedding"] is True
    assert body["tags"] == [{"name": "night", "slug": "night"}]
    # A 64-pixel original gives one rendition size (no upscaling): display and thumbnail.
    assert [(item["width"], item["height"]) for item in body["renditions"]] == [(64, 48)]
    assert body["url"] == body["thumbnail_url"] == body["renditions"][0]["url"]
    assert body["url"].startswith("/media/renditions/") and client.get(body["url"]).status_code == 200
    assert image.file.name not in response.content.decode()


# An unknown URL, a NUL byte, a crash: Django's own error handlers (tests/imagerec/test_errors.py).
def test_an_unknown_image_is_a_json_404(client):
    assert client.get(reverse("gallery:api-image-detail", args=[987654])).json()["error"] == {
        "status": 404, "message": "No image with id 987654.", "fields": {},
    }


# --- Writes: staff only ----------------------------------------------------------------


def detail_url(image) -> str:
    return reverse("gallery:api-image-detail", args=[image.pk])


def patch(client, image, body, **extra):
    return client.patch(detail_url(image), body, content_type="application/json", **extra)


def test_staff_edit_the_caption_and_replace_the_tags(staff_client, image_factory):
    from gallery.services import images_tag

    image = image_factory(1, caption="old")
    images_tag(image_ids=[image.pk], names=["old tag"])

    response = patch(staff_client, image, {"caption": "Harbour at night", "tags": ["harbour", "Night"]})

    assert response.status_code == 200
    assert response.json()["caption"] == "Harbour at night"
    assert sorted(tag["slug"] for tag in response.json()["tags"]) == ["harbour", "night"]
    image.refresh_from_db()
    assert image.caption == "Harbour at night" and sorted(image.tags.values_list("slug", flat=True)) == ["harbour", "night"]
    assert patch(staff_client, image, {"caption": "only the caption"}).json()["tags"] == response.json()["tags"]


def test_a_bad_edit_is_a_json_400_naming_the_field(staff_client, image_factory):
    image = image_factory(1)
    response = patch(staff_client, image, {"tags": "not a list"})
    assert response.status_code == 400 and set(response.json()["error"]["fields"]) == {"tags"}
    response = staff_client.patch(detail_url(image), "{not json", content_type="application/json")
    assert response.status_code == 400 and response.json()["error"]["status"] == 400


def test_anyone_else_cannot_write(client, django_user_model, image_factory):
    image = image_factory(1, caption="kept")
    visitor = django_user_model.objects.create_user("visitor", password="a-visitor-password")

    anonymous = patch(client, image, {"caption": "changed"})
    client.force_login(visitor)
    signed_in = patch(client, image, {"caption": "changed"})
    basic = patch(Client(), image, {"caption": "changed"}, HTTP_AUTHORIZATION=basic_auth("visitor", "a-visitor-password"))

    for response in (anonymous, signed_in, basic):
        assert response.status_code == 403 and response.json()["error"]["status"] == 403
    image.refresh_from_db()
    assert image.caption == "kept"
    # Nor any other method on any read endpoint.
    for url in (reverse("gallery:api-image-list"), detail_url(image), similar_url(image)):
        for method in (client.post, client.put, client.delete):
            assert method(url).status_code == 403


def test_staff_scripts_write_with_http_basic(django_user_model, image_factory):
    django_user_model.objects.create_superuser("curator", "curator@example.com", "a-curator-password")
    image = image_factory(1)
    response = patch(Client(), image, {"caption": "by script"}, HTTP_AUTHORIZATION=basic_auth("curator", "a-curator-password"))
    assert response.status_code == 200 and response.json()["caption"] == "by script"


def basic_auth(username: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()


# Each write, whatever the endpoint, needs what the admin needs for the same change: a staff
# account holding the model permission named by the admin's word for the method.
ADMIN_ACTION = {"post": "add", "put": "change", "patch": "change", "delete": "delete"}
# Public writes change nothing; any other write must be in the access test below.
PUBLIC_WRITES = {"search_by_photo"}


def api_schema(client) -> dict:
    return client.get(reverse("api-schema"), {"format": "json"}).json()


def write_operations(schema: dict) -> list[tuple[str, str, dict]]:
    """(path, method, operation) for every operation in the schema that is not a read."""
    return [
        (path, method, operation)
        for path, methods in schema["paths"].items()
        for method, operation in methods.items()
        if method in ADMIN_ACTION
    ]


def example_value(schema: dict):
    """A valid value that differs from anything stored: each write changes something."""
    kind = schema.get("type")
    if kind == "string":
        return "changed by an API write"
    if kind == "array":
        return [example_value(schema["items"])]
    if kind == "integer":
        return schema.get("minimum", 1)
    if kind == "boolean":
        return True
    raise AssertionError(f"teach example_value about {schema}")


def example_request(operation: dict, components: dict, image) -> dict:
    """Client.generic's arguments for a write that changes something when it is allowed."""
    if operation["operationId"] == "uploads_create":  # a multipart upload: a new photo
        return {"data": encode_multipart(BOUNDARY, {"file": upload("new.jpg", encode(photo_like(77)))}),
                "content_type": MULTIPART_CONTENT}
    if operation["operationId"] == "uploads_check":  # an image already there, given a tag
        return {"data": json.dumps({"sha256": [image.sha256], "tags": "changed"}), "content_type": "application/json"}
    body = example_body(operation, components)
    return {"data": "" if body is None else json.dumps(body), "content_type": "application/json"}


def example_body(operation: dict, components: dict) -> dict | None:
    if "requestBody" not in operation:
        return None  # a DELETE, say
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    body = components[body["$ref"].rsplit("/", 1)[-1]] if "$ref" in body else body
    return {name: example_value(field) for name, field in body["properties"].items() if not field.get("readOnly")}


def gallery_state() -> dict:
    """Every row of every gallery table (tags on images included)."""
    from django.apps import apps

    return {
        model._meta.db_table: list(model.objects.order_by("pk").values())
        for model in apps.get_app_config("gallery").get_models(include_auto_created=True)
    }


def test_the_only_public_write_is_search(client):
    operations = write_operations(api_schema(client))
    public = {operation["operationId"] for _, _, operation in operations if {} in operation["security"]}
    assert public == PUBLIC_WRITES


@pytest.mark.parametrize("auth", ["session", "basic"])
@pytest.mark.parametrize(
    "who, allowed",
    [
        ("nobody", False),
        ("a signed-in visitor with every permission", False),  # not staff: the admin refuses them too
        ("staff with every other permission", False),
        ("staff with the permission", True),
        ("a superuser", True),
    ],
)
def test_every_write_needs_staff_with_the_model_permission(client, django_user_model, image_factory, auth, who, allowed):
    from django.contrib.auth.models import Permission

    image = image_factory(1, caption="kept")
    schema = api_schema(client)
    operations = [op for op in write_operations(schema) if op[2]["operationId"] not in PUBLIC_WRITES]
    assert operations  # the image edit, at least
    for number, (path, method, operation) in enumerate(operations):
        action = ADMIN_ACTION[method]
        gallery_permissions = Permission.objects.filter(content_type__app_label="gallery")
        permissions = {
            "nobody": None,
            "a signed-in visitor with every permission": gallery_permissions,
            "staff with every other permission": gallery_permissions.exclude(codename__startswith=f"{action}_"),
            "staff with the permission": gallery_permissions.filter(codename__startswith=f"{action}_"),
            "a superuser": Permission.objects.none(),
        }[who]
        credentials, browser = {}, Client()
        if permissions is not None:
            user = django_user_model.objects.create_user(
                f"user-{number}", password="a-long-password", is_staff=who != "a signed-in visitor with every permission",
                is_superuser=who == "a superuser",
            )
            user.user_permissions.set(permissions)
            if auth == "session":
                browser.force_login(user)
            else:
                credentials = {"HTTP_AUTHORIZATION": basic_auth(user.username, "a-long-password")}
        before = gallery_state()

        url = re.sub(r"\{[^}]+\}", str(image.pk), path)
        request = example_request(operation, schema["components"]["schemas"], image)
        response = browser.generic(method.upper(), url, **request, **credentials)

        if allowed:
            assert 200 <= response.status_code < 300, (method, path, response.content)
            assert gallery_state() != before
        else:
            assert response.status_code in (401, 403), (method, path, response.content)
            assert response.json()["error"]["status"] == response.status_code
            assert gallery_state() == before, f"{method} {path} changed data for {who}"


@pytest.mark.parametrize("opening, closing", [("[", "]"), ('{"a":', "}")])
def test_a_body_nested_100000_deep_is_a_json_400(staff_client, image_factory, opening, closing):
    image = image_factory(1, caption="kept")
    body = opening * 100_000 + "1" + closing * 100_000
    response = staff_client.patch(detail_url(image), body, content_type="application/json")
    assert response.status_code == 400 and response["Content-Type"] == "application/json"
    assert response.json()["error"]["status"] == 400 and "JSON" in response.json()["error"]["message"]
    image.refresh_from_db()
    assert image.caption == "kept"


def not_json(body: bytes) -> bool:
    """Malformed: not empty (an empty body is no data, as `{}` is) and not a JSON document."""
    if not body:
        return False
    try:
        json.loads(body)
    except (ValueError, RecursionError):
        return True
    return False


# Bodies that are almost JSON: a valid document cut short or with a byte changed, bytes, text.
json_documents = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=12,
).map(lambda value: json.dumps(value).encode())
malformed_bodies = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.tuples(json_documents, st.integers(min_value=0)).map(lambda pair: pair[0][: pair[1] % max(len(pair[0]), 1)]),
    st.tuples(json_documents, st.integers(min_value=0), st.binary(min_size=1, max_size=3)).map(
        lambda triple: triple[0][: triple[1] % len(triple[0])] + triple[2] + triple[0][triple[1] % len(triple[0]) + 1 :]
    ),
    st.integers(min_value=1, max_value=50_000).map(lambda depth: b"[" * depth),
).filter(not_json)


@hypothesis_settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(body=malformed_bodies)
def test_any_malformed_json_body_is_a_json_400(staff_client, image_factory, body):
    image = Image.objects.first() or image_factory(1, caption="kept")
    response = staff_client.patch(detail_url(image), body, content_type="application/json")
    assert response.status_code == 400 and response["Content-Type"] == "application/json", response.content
    assert response.json()["error"]["status"] == 400
    image.refresh_from_db()
    assert image.caption == "kept"


# --- Search by photo -------------------------------------------------------------------

SEARCH_API_URL = reverse("gallery:api-search")


def test_a_file_that_is_not_a_picture_is_a_400_with_the_reason():
    response = Client(REMOTE_ADDR="192.0.2.10").post(SEARCH_API_URL, {"photo": upload("notes.jpg", b"words\n" * 50)})
    assert response.status_code == 400
    assert "not an image that can be read" in response.json()["error"]["fields"]["photo"]


def test_search_without_a_worker_is_a_json_503(settings):
    from tests.conftest import purge_queues

    settings.SEARCH_TIMEOUT_SECONDS = 0.3
    purge_queues()
    photo = upload("mine.jpg", encode(photo_like(1)))
    response = Client(REMOTE_ADDR="192.0.2.11").post(SEARCH_API_URL, {"photo": photo})
    purge_queues()
    assert response.status_code == 503 and "busy or not running" in response.json()["error"]["message"]


@pytest.mark.parametrize("url", [SEARCH_API_URL, reverse("gallery:search")])
def test_a_429_says_when_to_come_back_and_is_right(settings, url):
    # A window of two seconds: waiting as long as Retry-After says is enough, and no longer.
    settings.SEARCH_RATE = "1/2s"
    client = Client(REMOTE_ADDR="192.0.2.15")

    def search():
        return client.post(url, {"photo": upload("x.jpg", b"not a picture")})

    # Three, not two: the limit counts in fixed two-second windows, and two searches may fall
    # either side of a window's end; of three made at once, two share a window.
    limited = next(response for response in (search(), search(), search()) if response.status_code == 429)
    assert limited["Retry-After"] == "2"
    if url == reverse("gallery:search"):  # the page says it in words too
        assert "try again in 2 seconds" in limited.content.decode()
    time.sleep(int(limited["Retry-After"]))
    assert search().status_code != 429


def test_searches_are_rate_limited_per_address_with_a_json_429(settings):
    settings.SEARCH_RATE = "2/m"
    client = Client(REMOTE_ADDR="192.0.2.12")
    responses = [client.post(SEARCH_API_URL, {"photo": upload("x.jpg", b"not a picture")}) for _ in range(3)]
    assert [response.status_code for response in responses] == [400, 400, 429]
    assert responses[2].json()["error"]["status"] == 429
    assert responses[2]["Retry-After"] == "60"  # a minute's window: at most a minute to wait
    assert Client(REMOTE_ADDR="192.0.2.13").post(SEARCH_API_URL, {"photo": upload("x.jpg", b"x")}).status_code == 400


@pytest.mark.end_to_end
def test_a_photo_finds_its_look_alike_through_the_api(start_worker):
    from gallery.models import Image
    from gallery.services import image_create

    start_worker()
    for seed in range(3):
        image_create(upload=upload(f"scene-{seed}.jpg", encode(photo_like(seed, (480, 360)))))
    wait_for(lambda: Image.objects.ready().count() == 3, timeout=90, message="the gallery to be embedded")
    look_alike = encode(photo_like(2, (480, 360)).resize((300, 225)), "JPEG", quality=75)

    response = Client(REMOTE_ADDR="192.0.2.14").post(SEARCH_API_URL, {"photo": upload("mine.jpg", look_alike), "k": 2})

    assert response.status_code == 200, response.content
    similar = response.json()["similar"]
    assert len(similar) == 2 and similar[0]["caption"] == "scene 2"
    assert similar[0]["similarity"] > similar[1]["similarity"]


# --- Schema and documentation ----------------------------------------------------------


def test_the_schema_describes_every_endpoint(client):
    schema = client.get(reverse("api-schema"), {"format": "json"}).json()
    assert schema["openapi"].startswith("3.")
    assert set(schema["paths"]) == {
        "/api/images/", "/api/images/{id}/", "/api/images/{id}/similar/", "/api/search/",
        "/api/uploads/", "/api/uploads/check/", "/api/uploads/archives/{id}/",
    }
    assert set(schema["paths"]["/api/images/{id}/"]) == {"get", "patch"}


def test_the_docs_page_is_served_from_this_site_without_a_cdn(client):
    from django.contrib.staticfiles import finders

    page = client.get(reverse("api-docs")).content.decode()
    scripts = re.findall(r'src="([^"]+)"', page)
    assert scripts and all(not src.startswith(("http:", "https:", "//")) for src in scripts), scripts
    bundle = next(src for src in scripts if src.endswith("swagger-ui-bundle.js"))
    assert finders.find(bundle.removeprefix(settings.STATIC_URL).removeprefix("/static/"))
    assert client.get(reverse("api-redoc")).status_code == 200
